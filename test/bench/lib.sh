# shellcheck shell=bash
# lib.sh: helpers shared by test/bench/bench.sh, capture.sh, latency.sh and policy.sh (sourced).
#
#   BENCH_OUT   results directory of this bench run (default .cache/bench/<UTC time>: under the
#               gitignored build cache, which `make clean` keeps)
#   BENCH_BIN   where the bench's Go programs are built (default $BENCH_OUT/bin)

BENCH_REPO=${BENCH_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export PATH

now_ms() { date +%s%3N; }
now_s() { date +%s.%N; }
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# pid_running PID: the process exists and is neither a zombie nor dead (kill -0 succeeds on
# zombies); test/cluster/common.sh's twin (TestPidRunning checks both). One read of
# /proc/PID/stat, whose state follows the last ')' (comm may hold spaces and parentheses): a
# check-then-read would take a process reaped between the two for running.
pid_running() {
  local stat state
  [[ ${1-} =~ ^[1-9][0-9]*$ ]] || return 1
  IFS= read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  state=${stat##*) }
  state=${state%% *}
  case $state in '' | Z | X | x) return 1 ;; esac
}

# poll TIMEOUT_S CMD...: run CMD every 20 ms until it succeeds; 1 after TIMEOUT_S
poll() {
  local end=$(( $(now_ms) + $1 * 1000 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$end" ] || return 1
    sleep 0.02
  done
}

# stop_pid PID [TIMEOUT_S] [SIGNAL]: signal PID (default TERM), wait for it to end (SIGKILL
# after TIMEOUT_S, default 10) and reap it if it is our child. Only for processes we started.
stop_pid() {
  local pid=$1 t=${2:-10} sig=${3:-TERM} end
  [ -n "$pid" ] || return 0
  if pid_running "$pid"; then
    kill -"$sig" "$pid" 2>/dev/null || true
    end=$(( $(now_ms) + t * 1000 ))
    while pid_running "$pid" && [ "$(now_ms)" -lt "$end" ]; do sleep 0.02; done
    if pid_running "$pid"; then
      log "pid $pid ignored SIG$sig for ${t}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

# apt_need PKG...: install the Debian packages that are missing (BENCH_NO_APT=1: fail instead)
apt_need() {
  local p missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "${BENCH_NO_APT:-0}" != 1 ] || die "missing Debian packages: ${missing[*]} (BENCH_NO_APT=1)"
  log "apt-get install ${missing[*]}"
  # iperf3's postinst asks whether to start a daemon: the default (no) is what we want
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; } ||
    die "apt-get install ${missing[*]}"
}

# build_tools: the bench's Go programs (static, like the agent) into $BENCH_BIN
build_tools() {
  mkdir -p "$BENCH_BIN"
  (cd "$BENCH_REPO" && CGO_ENABLED=0 go build -o "$BENCH_BIN/" ./test/bench/cmd/...) ||
    die "go build ./test/bench/cmd/..."
}

# build_agent: $BENCH_BIN/podcap-agent from this tree (part B runs it)
build_agent() {
  mkdir -p "$BENCH_BIN"
  (cd "$BENCH_REPO" && CGO_ENABLED=0 go build -o "$BENCH_BIN/podcap-agent" ./cmd/podcap-agent) ||
    die "go build ./cmd/podcap-agent"
}

bench_defaults() {
  BENCH_OUT=${BENCH_OUT:-$BENCH_REPO/.cache/bench/$(date -u +%Y%m%dT%H%M%SZ)}
  BENCH_BIN=${BENCH_BIN:-$BENCH_OUT/bin}
  mkdir -p "$BENCH_OUT"
  BENCH_OUT=$(cd "$BENCH_OUT" && pwd)
  export BENCH_OUT BENCH_BIN
}
