#!/usr/bin/env bash
# lint.sh: `helm lint --strict` and `helm template` of deploy/helm/podcap (`make helm-test`, part
# of `make test`), with the chart's defaults and with each file of values/ (every value the
# chart has is set by one of them), and the values the schema must refuse, each with the error
# the user reads. Helm is the one test/cluster/cluster.sh builds into the cache from the Go
# module proxy (`cluster.sh build`; HELM=... to use another).
# The kustomize comparison and the install on the test bed are Go tests
# (test/integration/helm_test.go).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=test/cluster/common.sh
. "$ROOT/test/cluster/common.sh"
HELM=${HELM:-$BIN/helm}
CHART=$ROOT/deploy/helm/podcap
HERE=$ROOT/test/helm
[ -x "$HELM" ] || { echo "lint.sh: no helm at $HELM: run test/cluster/cluster.sh build first" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
fail=0
say() { printf '[helm-test] %s\n' "$*" >&2; }

"$HELM" version --short >&2

# lint and render: defaults, then every values file
for v in "" "$HERE"/values/*.yaml; do
  name=${v:+$(basename "$v" .yaml)}
  args=(); [ -z "$v" ] || args=(-f "$v")
  if ! "$HELM" lint --strict "$CHART" "${args[@]}" >"$OUT/lint.log" 2>&1; then
    cat "$OUT/lint.log" >&2; say "FAIL: helm lint --strict ${name:-defaults}"; fail=1; continue
  fi
  if ! "$HELM" template podcap "$CHART" -n podcap-system "${args[@]}" >"$OUT/${name:-defaults}.yaml" 2>"$OUT/template.log"; then
    cat "$OUT/template.log" >&2; say "FAIL: helm template ${name:-defaults}"; fail=1; continue
  fi
  say "ok: lint + template ${name:-defaults} ($(grep -c '^kind: ' "$OUT/${name:-defaults}.yaml") objects)"
done

# the schema refuses these, naming the value
refuse() { # WANT-IN-ERROR HELM-ARGS...
  local want=$1; shift
  if "$HELM" template podcap "$CHART" "$@" >"$OUT/refused.yaml" 2>"$OUT/refused.log"; then
    say "FAIL: helm template $* was accepted"; fail=1
  elif ! grep -q -- "$want" "$OUT/refused.log"; then
    cat "$OUT/refused.log" >&2; say "FAIL: helm template $*: no '$want' in the error"; fail=1
  else
    say "ok: refused $* ($(grep -o -- "$want.*" "$OUT/refused.log" | head -1 | cut -c1-100))"
  fi
}
refuse "engine" --set engine=turbo
refuse "captureDir" --set captureDir=relative/dir
refuse "socketDir" --set runtime.socketDir=
refuse "endpoint" --set runtime.endpoint=tcp://10.0.0.1:1234
refuse "digest" --set image.digest=latest
refuse "extraArgs" --set 'extraArgs[0]=rm -rf /'
refuse "metrics" --set ports.metrics=70000
refuse "captureReaders" --set 'rbac.captureReaders[0].namespace=shop'
refuse "notrego" --set-string 'policies.extra.notrego=x'
refuse "imageTag\|additional properties\|not allowed" --set imageTag=v1
refuse "serviceAccount.name is required" --set serviceAccount.create=false

exit "$fail"
