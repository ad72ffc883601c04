# shellcheck shell=bash
# demo-retrieval.sh: the retrieval part of `make demo`, sourced by test/demo.sh (which defines k,
# run, say, fail, NS, POD, RING0, AGENT, PID (of the pod), OUT, CLUSTER_DIR and the cluster
# layout of common.sh).
#
#   retrieval_demo  while test-pod's manual capture runs: build bin/kubectl-podcap; apply
#                   deploy/examples/capture-reader.yaml for namespace $NS (Role get pods/capture,
#                   and podcap-plugin-user to reach the agents) to ServiceAccount $NS/ci; a
#                   kubeconfig holding only that ServiceAccount's token; then, as it:
#                   `kubectl podcap ls`, `explain`, `get` (the ring, compared with the agent's
#                   file), `stream | tcpdump -r -`, and `ls -n kube-system` refused (403). The
#                   agent checks the token with TokenReview and SubjectAccessReview.
#                   outputs/retrieval/
# shellcheck disable=SC2153,SC2154  # k, NS, POD, OUT, ... come from demo.sh

RETRIEVAL_OUT=$OUT/retrieval

retrieval_demo() {
  local kcfg=$CLUSTER_DIR/ci.kubeconfig token server plugin=(bin/kubectl-podcap) out
  say "kubectl podcap: build bin/kubectl-podcap; a ServiceAccount $NS/ci granted get pods/capture in $NS"
  run env CGO_ENABLED=0 go build -o bin/kubectl-podcap ./cmd/kubectl-podcap
  k -n "$NS" create serviceaccount ci --dry-run=client -o yaml | k apply -f - >/dev/null
  sed "s/namespace: shop\$/namespace: $NS/" deploy/examples/capture-reader.yaml | k apply -f -
  token=$(k -n "$NS" create token ci --duration=1h) || fail "kubectl create token"
  server=$(k config view --raw -o jsonpath='{.clusters[0].cluster.server}')
  k config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$CLUSTER_DIR/ci-ca.crt"
  rm -f "$kcfg"
  "$BIN/kubectl" --kubeconfig "$kcfg" config set-cluster demo --server="$server" \
    --certificate-authority="$CLUSTER_DIR/ci-ca.crt" --embed-certs >/dev/null
  "$BIN/kubectl" --kubeconfig "$kcfg" config set-credentials ci --token="$token" >/dev/null
  "$BIN/kubectl" --kubeconfig "$kcfg" config set-context demo --cluster=demo --user=ci --namespace="$NS" >/dev/null
  "$BIN/kubectl" --kubeconfig "$kcfg" config use-context demo >/dev/null
  plugin+=(--kubeconfig "$kcfg")
  rm -rf "$RETRIEVAL_OUT"
  mkdir -p "$RETRIEVAL_OUT/get"

  say "kubectl podcap ls / explain $POD (as $NS/ci, a token only)"
  run "${plugin[@]}" ls -o wide | tee "$RETRIEVAL_OUT/ls.txt"
  grep -q "$POD" "$RETRIEVAL_OUT/ls.txt" || fail "kubectl podcap ls does not list $POD"
  run "${plugin[@]}" explain "$POD" | tee "$RETRIEVAL_OUT/explain.txt"

  say "kubectl podcap get $POD: the ring, oldest file first"
  run "${plugin[@]}" get "$POD" -o "$RETRIEVAL_OUT/get"
  find "$RETRIEVAL_OUT/get" -type f -printf '%f %s bytes\n' | sort | tee "$RETRIEVAL_OUT/get.txt"
  # the first file is complete or still written: what was downloaded is the start of the agent's file
  in_agent cat "$RING0" >"$CLUSTER_DIR/ring0-now.pcap"
  out=$RETRIEVAL_OUT/get/$(basename "$RING0")
  if ! [ -s "$out" ] || ! cmp -s "$out" <(head -c "$(wc -c <"$out")" "$CLUSTER_DIR/ring0-now.pcap"); then
    fail "the downloaded $(basename "$RING0") is not the agent's file"
  fi
  echo "$(basename "$RING0"): the downloaded $(wc -c <"$out") bytes are the agent's file"

  say "kubectl podcap stream $POD | tcpdump -r - (5 live packets)"
  # read in the pod's network namespace, as demo.sh reads the ring file: interface names
  "${plugin[@]}" stream "$POD" | nsenter -n -t "$PID" tcpdump -nn -r - -c 5 >"$RETRIEVAL_OUT/stream.txt" 2>"$CLUSTER_DIR/stream-tcpdump.err" ||
    { cat "$CLUSTER_DIR/stream-tcpdump.err" >&2; fail "tcpdump could not read kubectl podcap stream"; }
  cat "$RETRIEVAL_OUT/stream.txt"
  [ "$(wc -l <"$RETRIEVAL_OUT/stream.txt")" -eq 5 ] || fail "kubectl podcap stream gave $(wc -l <"$RETRIEVAL_OUT/stream.txt") packets, want 5"

  say "kubectl podcap ls -n kube-system: refused, $NS/ci may not read captures there"
  if "${plugin[@]}" ls -n kube-system >"$RETRIEVAL_OUT/forbidden.txt" 2>&1; then
    fail "kubectl podcap ls -n kube-system succeeded for $NS/ci"
  fi
  cat "$RETRIEVAL_OUT/forbidden.txt"
  grep -q "ask for get pods/capture" "$RETRIEVAL_OUT/forbidden.txt" || fail "the refusal does not say what to ask for"
}
