#!/usr/bin/env bash
# policy.sh: part C of `make bench`: what the shipped policies (rules/*.rego) cost per decision.
#
# Runs Go benchmarks (`go test -run '^$' -bench ... -count $POLICY_COUNT`), first at
# GOMAXPROCS=1 (one core: the per-core rate), then at the default GOMAXPROCS (every core):
#
#   policy/  BenchmarkDecide, BenchmarkDecideParallel      the engine's Decide for a typical pod
#            BenchmarkReevaluate110Pods/reload={false,true} 110 Decides (after a Reload)
#   agent/   BenchmarkPolicySyncUncached                    the controller's sync, cache miss
#            BenchmarkPolicySyncCached                      the sync of an unchanged pod (hit)
#            BenchmarkPolicyReevaluate110Pods               policy change → every pod of a 110-pod
#                                                           node synced with the new version
#
# Each benchmark's ns/op becomes decisions/s = decisions per op × 1e9 / ns_per_op (1 decision
# per op, 110 for the node re-evaluations); the medians over the runs go to
# $BENCH_OUT/policy.jsonl, one object per (benchmark, GOMAXPROCS); every run to
# raw/policy-runs.jsonl, go test's output to raw/policy-*.txt. Needs no root, only Go and jq.
#
# Environment: POLICY_BENCHTIME (go test -benchtime, default 1s), POLICY_COUNT (runs per
# benchmark, default 5), BENCH_OUT, BENCH_BIN (lib.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

BENCHTIME=${POLICY_BENCHTIME:-1s}
COUNT=${POLICY_COUNT:-5}
if ! [[ $BENCHTIME =~ ^([0-9]+x|[0-9]*\.?[0-9]+(ns|us|ms|s|m))$ ]]; then die "POLICY_BENCHTIME=$BENCHTIME: want a go test -benchtime (1s, 500ms, 100x)"; fi
if ! [[ $COUNT =~ ^[1-9][0-9]?$ ]]; then die "POLICY_COUNT=$COUNT: want 1 to 99"; fi
command -v jq >/dev/null || die "jq is missing"

bench_defaults
RAW=$BENCH_OUT/raw
mkdir -p "$RAW"
RUNS=$RAW/policy-runs.jsonl
: >"$RUNS"

# package → the benchmarks of part C in it (anchored: BenchmarkDecide must not match
# BenchmarkDecideParallel twice, nor policy's BenchmarkReevaluate110Pods agent's)
declare -A BENCHES=(
  [policy]='^Benchmark(Decide|DecideParallel|Reevaluate110Pods)$'
  [agent]='^BenchmarkPolicy(SyncUncached|SyncCached|Reevaluate110Pods)$'
)

# to_json PKG GOMAXPROCS LOADAVG1: go test's benchmark lines on stdin → one JSON object per run
# ("BenchmarkX-2  N  v1 unit1  v2 unit2 ..."; GOMAXPROCS is the -N suffix, the argument when
# there is none: go test leaves it out at GOMAXPROCS=1)
to_json() {
  awk -v pkg="$1" -v procs="$2" -v la="$3" '
    /^Benchmark/ && NF >= 4 && $4 == "ns/op" {
      name = $1; p = procs
      if (match(name, /-[0-9]+$/)) { p = substr(name, RSTART + 1); name = substr(name, 1, RSTART - 1) }
      sub(/^Benchmark/, "", name)
      printf "{\"package\":\"%s\",\"benchmark\":\"%s\",\"gomaxprocs\":%d,\"loadavg1\":%s,\"iterations\":%s,\"metrics\":{", pkg, name, p, la, $2
      for (i = 3; i + 1 <= NF; i += 2) printf "%s\"%s\":%s", (i > 3 ? "," : ""), $(i + 1), $i
      print "}}"
    }'
}

# run_bench PKG PROCS: PROCS "" is the default GOMAXPROCS
run_bench() {
  local pkg=$1 procs=$2 out la n
  out=$RAW/policy-$pkg-gomaxprocs${procs:-default}.txt
  la=$(cut -d' ' -f1 /proc/loadavg)
  log "policy: $pkg at GOMAXPROCS=${procs:-default} (-benchtime $BENCHTIME -count $COUNT, 1-min load $la)"
  (
    cd "$BENCH_REPO"
    if [ -n "$procs" ]; then export GOMAXPROCS=$procs; else unset GOMAXPROCS; fi
    go test -run '^$' -bench "${BENCHES[$pkg]}" -benchtime "$BENCHTIME" -count "$COUNT" "./$pkg/"
  ) >"$out" 2>&1 || { cat "$out" >&2; log "policy: go test ./$pkg/ failed (see $out)"; return 1; }
  n=$(to_json "$pkg" 1 "$la" <"$out" | tee -a "$RUNS" | wc -l)
  [ "$n" -gt 0 ] || { log "policy: no benchmark results in $out"; return 1; }
}

rc=0
for procs in 1 ""; do
  for pkg in policy agent; do
    run_bench "$pkg" "$procs" || rc=1
  done
done

# medians per (package, benchmark, GOMAXPROCS); decisions/s from each run's ns/op
jq -s -c --arg benchtime "$BENCHTIME" '
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def per_op: if (.benchmark | test("Reevaluate110Pods")) then 110 else 1 end;
  group_by([.package, .benchmark, .gomaxprocs])[]
  | . as $runs | $runs[0] as $r
  | ([$runs[].metrics["ns/op"]]) as $ns
  | {package: $r.package, benchmark: $r.benchmark, gomaxprocs: $r.gomaxprocs,
     parallel: ($r.benchmark | test("Parallel")), decisions_per_op: ($r | per_op),
     runs: ($runs | length), benchtime: $benchtime,
     ns_per_op: ($ns | median), ns_per_op_min: ($ns | min), ns_per_op_max: ($ns | max),
     decisions_per_s: ([$ns[] | ($r | per_op) * 1e9 / .] | median),
     bytes_per_op: ([$runs[].metrics["B/op"] // empty] | median),
     allocs_per_op: ([$runs[].metrics["allocs/op"] // empty] | median),
     metrics: ([$runs[].metrics | keys[]] | unique - ["ns/op", "B/op", "allocs/op"]
       | map({key: ., value: ([$runs[].metrics[.] // empty] | median)}) | from_entries),
     loadavg1: ([$runs[].loadavg1] | median)}
' "$RUNS" >"$BENCH_OUT/policy.jsonl" || { log "policy: summarising $RUNS failed"; exit 1; }
log "policy: $(wc -l <"$BENCH_OUT/policy.jsonl") results in $BENCH_OUT/policy.jsonl"
exit "$rc"
