#!/usr/bin/env bash
# capture.sh: part A of `make bench`: what capturing costs the traffic, on this machine.
#
# Two network namespaces joined by a veth (names and a 10.213.X.0/24 subnet private to this
# run; nothing is routed or sent anywhere else), and bounded loads from the "tx" namespace to
# the "rx" one:
#   udp64  test/bench/cmd/blast: 64-byte UDP datagrams with sendmmsg, to a socket that never reads
#   tcp1   iperf3, one TCP stream
# each for T seconds under these captures of the rx namespace:
#   none          no capture: the baseline
#   tcpdump-ring  nsenter -t HOLDER -n tcpdump -i any -Z root -s S -C 1 -W 5 -w ring.pcap
#                 (the original tool's own ring)
#   pipeline      test/bench/cmd/pipeline: the agent's tcpdump engine (nsenter -t HOLDER -n
#                 tcpdump -i any -U --immediate-mode -Z root -s S -w -) + capture.Pump +
#                 capture.Ring of 5 files of 1,000,000 bytes
#   native        the same cmd/pipeline with -engine native: the agent's AF_PACKET TPACKET_V3
#                 engine (capture/native, 32 MiB ring, opened in the namespace of HOLDER)
#                 instead of nsenter+tcpdump, the same Pump and Ring
# with S = 262144 (full) and 128. HOLDER is a process that lives in the rx namespace, as a
# pod's container process does for the agent.
#
# REPS rounds; every round runs each (load, capture) once, the baseline included, in an order
# rotated by one each round, so that each capture has a baseline of the same round. After a
# load the capture is drained (kernel counters — tcpdump's SIGUSR1 lines, native's
# PACKET_STATISTICS — until every packet received is captured or dropped), then stopped. One JSON object per run goes to $BENCH_OUT/capture.jsonl; raw
# outputs to $BENCH_OUT/raw/. test/bench/cmd/report turns them into the table.
#
# With BENCH_CAPTURE_PART=stream (stream.sh: part E) the same loads run under other captures,
# all at full snaplen, results in $BENCH_OUT/stream.jsonl: for each engine of
# BENCH_STREAM_ENGINES (default "pipeline native": cmd/pipeline over tcpdump, over native)
#   ENGINE          the capture alone: part E's baseline
#   ENGINE+r1       1 live-stream reader: cmd/pipeline serves the capture's stream as the agent
#                   does (-stream-listen: agent.StreamHandler on agent.NewAPIServer, HTTPS), and
#                   cmd/streamread reads it over loopback into io.Discard
#   ENGINE+r10      10 readers (the agent's --max-stream-readers[-per-capture] set to 10)
#   ENGINE+metrics  an agent-like registry on agent.NewMetricsServer (-metrics-listen),
#                   scraped by cmd/streamread every BENCH_SCRAPE_INTERVAL (default 100ms)
# in an order rotated each round, each compared with its engine's baseline of the round.
#
# Environment: T (seconds per load, default 10, 1..30), REPS (default 3), BENCH_OUT, BENCH_BIN
# (see lib.sh), BENCH_CAPTURE_DIR (default $BENCH_OUT/cap: its block device is the one whose
# written sectors are counted), BENCH_LOADS (default "udp64 tcp1"), BENCH_WARMUP (default 1:
# one unrecorded 2 s tcp1 run first).
#
# Needs root. Everything it creates is removed on exit, also on failure or interrupt (trap);
# namespaces left by a run that was killed with SIGKILL are removed by the next run.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

T=${T:-10}
REPS=${REPS:-3}
LOADS=${BENCH_LOADS:-udp64 tcp1}
WARMUP=${BENCH_WARMUP:-1}
if ! [[ $T =~ ^[0-9]+$ ]] || [ "$T" -lt 1 ] || [ "$T" -gt 30 ]; then die "T=$T: want 1..30 seconds"; fi
if ! [[ $REPS =~ ^[1-9][0-9]*$ ]]; then die "REPS=$REPS: want >= 1"; fi
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, tcpdump)"

bench_defaults
RAW=$BENCH_OUT/raw
CAP=${BENCH_CAPTURE_DIR:-$BENCH_OUT/cap}
PART=${BENCH_CAPTURE_PART:-capture}
RESULTS=$BENCH_OUT/$PART.jsonl
PIPELINE=$BENCH_BIN/pipeline
BLAST=$BENCH_BIN/blast
STREAMREAD=$BENCH_BIN/streamread
SCRAPE_INTERVAL=${BENCH_SCRAPE_INTERVAL:-100ms}
CLK_TCK=$(getconf CLK_TCK)

ID=$$
TX=podcap-bench-tx-$ID
RX=podcap-bench-rx-$ID
IFTX=pcb${ID}t
IFRX=pcb${ID}r
NET3=10.213.$(( ID % 250 + 1 ))
A=$NET3.1
B=$NET3.2
IPERF_PORT=5201
UDP_PORT=9
HOLDER=""        # a process in $RX: the capture target (nsenter -t HOLDER -n)
TD_PID=""        # tcpdump of the current run
PIPE_PID=""      # pipeline of the current run
SRV_PID=""       # load server of the current run
RD_PID=""        # streamread of the current run (part E)
case $PART in
  capture)
    CONFIGS=("none:0" "tcpdump-ring:262144" "pipeline:262144" "native:262144"
             "tcpdump-ring:128" "pipeline:128" "native:128") ;;
  stream)
    CONFIGS=()
    for e in ${BENCH_STREAM_ENGINES:-pipeline native}; do
      case $e in pipeline | native) ;; *) die "BENCH_STREAM_ENGINES: unknown engine $e (pipeline, native)" ;; esac
      CONFIGS+=("$e:262144" "$e+r1:262144" "$e+r10:262144" "$e+metrics:262144")
    done ;;
  *) die "BENCH_CAPTURE_PART=$PART: want capture or stream" ;;
esac

# ---------------------------------------------------------------- namespaces
# namespaces of earlier runs whose capture.sh is gone (killed with SIGKILL)
remove_stale() {
  local ns owner p
  for ns in $(ip netns list | awk '{print $1}' | grep -E '^podcap-bench-(tx|rx)-[0-9]+$' || true); do
    owner=${ns##*-}
    if [ "$owner" != "$ID" ] && ! tr '\0' ' ' <"/proc/$owner/cmdline" 2>/dev/null | grep -q 'capture\.sh'; then
      log "removing namespace $ns of an earlier run (pid $owner is gone)"
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

cleanup() {
  local rc=$? ns p
  set +e
  trap - EXIT INT TERM
  [ -n "$PIPE_PID" ] && stop_pid "$PIPE_PID" 5
  [ -n "$RD_PID" ] && stop_pid "$RD_PID" 5
  # everything still running in our namespaces was started by this script
  for ns in "$TX" "$RX"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
  for p in $TD_PID $SRV_PID $HOLDER; do wait "$p" 2>/dev/null; done
  ip netns del "$TX" 2>/dev/null
  ip netns del "$RX" 2>/dev/null
  rm -rf "$CAP"
  if ip netns list | grep -qE "^($TX|$RX)( |\$)"; then
    log "FAIL: namespace left behind"; rc=1
  fi
  log "$PART: cleaned up (namespaces $TX $RX, $CAP)"
  exit "$rc"
}

setup() {
  remove_stale
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  ip netns add "$TX"
  ip netns add "$RX"
  ip link add "$IFTX" netns "$TX" type veth peer name "$IFRX" netns "$RX"
  ip -n "$TX" addr add "$A/24" dev "$IFTX"
  ip -n "$RX" addr add "$B/24" dev "$IFRX"
  local ns
  for ns in "$TX" "$RX"; do
    # no IPv6 (no router/neighbour solicitations in the captures)
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
  done
  ip -n "$TX" link set "$IFTX" up
  ip -n "$RX" link set "$IFRX" up
  poll 10 ip netns exec "$TX" ping -c1 -W1 "$B" || die "no ping from $TX to $B"
  # the capture target: `ip netns exec` execs sleep in the namespace (bounded life: the
  # trap kills it earlier)
  ip netns exec "$RX" sleep 7200 &
  HOLDER=$!
  holder_in_rx() { [ "$(readlink "/proc/$HOLDER/ns/net")" = "net:[$(stat -L -c %i "/var/run/netns/$RX")]" ]; }
  poll 5 holder_in_rx || die "holder $HOLDER did not enter $RX"
  mkdir -p "$RAW" "$CAP"
  log "$PART: namespaces $TX ($A) <-> $RX ($B) via veth $IFTX/$IFRX, target pid $HOLDER, T=${T}s REPS=$REPS"
}

# ---------------------------------------------------------------- measurements
ticks() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rx_stats() { ip -n "$RX" -s -j link show dev "$IFRX" | jq -r '.[0].stats64.rx | "\(.packets) \(.bytes)"'; }

# the block device that holds DIR, as named in /sys/class/block ("" if none: tmpfs, overlay)
block_dev() {
  local src
  src=$(findmnt -n -o SOURCE -T "$1" | head -1)
  src=$(readlink -f "$src" 2>/dev/null || true)
  if [ -b "$src" ] && [ -r "/sys/class/block/$(basename "$src")/stat" ]; then basename "$src"; fi
}
sectors() { if [ -n "$DEV" ]; then awk '{print $7}' "/sys/class/block/$DEV/stat"; else echo 0; fi; }

# counters FILE: tcpdump's last "captured received dropped" (exit lines or SIGUSR1 line)
counters() {
  awk '
    /packets? captured/           { for (i = 1; i < NF; i++) if ($(i+1) ~ /^packets?$/ && $(i+2) ~ /^captured/) c = $i }
    /packets? received by filter/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^packets?$/ && $(i+2) == "received") r = $i }
    /packets? dropped by kernel/  { for (i = 1; i < NF; i++) if ($(i+1) ~ /^packets?$/ && $(i+2) == "dropped" && $(i+4) ~ /^kernel/) d = $i }
    END { printf "%d %d %d\n", c, r, d }' "$1"
}

# ---------------------------------------------------------------- captures
engine_of() { if [ "$1" = native ]; then echo native; else echo tcpdump; fi; } # cmd/pipeline -engine
variant_of() { if [[ $1 == *+* ]]; then echo "${1#*+}"; else echo none; fi; }      # part E: none, r1, r10, metrics
start_capture() { # CONFIG SNAPLEN TAG
  local cfg=${1%%+*} variant snap=$2 tag=$3 line port="" extra=()
  variant=$(variant_of "$1")
  TD_PID="" PIPE_PID="" RD_PID=""
  case $variant in
    r*) port=$(free_port 19443); extra=(-stream-listen "127.0.0.1:$port" -stream-max-readers 10) ;;
    metrics) port=$(free_port 19090); extra=(-metrics-listen "127.0.0.1:$port" -stats-interval "${BENCH_STATS_INTERVAL:-5s}") ;;
  esac
  case $cfg in
    none) ;;
    tcpdump-ring)
      nsenter -t "$HOLDER" -n tcpdump -i any -Z root -s "$snap" -C 1 -W 5 -w "$CAP/ring.pcap" 2>"$tag.tcpdump.err" &
      TD_PID=$!
      poll 15 grep -q "listening on" "$tag.tcpdump.err" || die "tcpdump did not start: $(cat "$tag.tcpdump.err")"
      ;;
    pipeline | native)
      # the same program; -engine native runs no tcpdump (it reports tcpdump_pid=0)
      "$PIPELINE" -engine "$(engine_of "$cfg")" -pid "$HOLDER" -dir "$CAP" -files 5 -size 1000000 -snaplen "$snap" \
        "${extra[@]}" >"$tag.pipeline.json" 2>"$tag.pipeline.err" &
      PIPE_PID=$!
      poll 15 grep -q "pipeline: ready" "$tag.pipeline.err" || die "pipeline did not start: $(cat "$tag.pipeline.err")"
      line=$(grep "pipeline: ready" "$tag.pipeline.err")
      TD_PID=${line##*tcpdump_pid=}
      [ "$TD_PID" != 0 ] || TD_PID=""
      # part E: the readers or the scraper, in the host's namespace (loopback)
      case $variant in
        r*) "$STREAMREAD" -url "https://127.0.0.1:$port/api/v1/captures/bench/pipeline/stream" -readers "${variant#r}" \
              >"$tag.streamread.json" 2>"$tag.streamread.err" & RD_PID=$! ;;
        metrics) "$STREAMREAD" -scrape "http://127.0.0.1:$port/metrics" -scrape-interval "$SCRAPE_INTERVAL" \
              >"$tag.streamread.json" 2>"$tag.streamread.err" & RD_PID=$! ;;
      esac
      if [ -n "$RD_PID" ]; then
        poll 20 grep -q "streamread: ready" "$tag.streamread.err" || die "streamread not ready: $(cat "$tag.streamread.err")"
      fi
      ;;
    *) die "unknown capture $cfg" ;;
  esac
}

# drain_tcpdump ERRFILE: SIGUSR1 every 100 ms until captured+dropped >= received or the
# counters stood still for 1.5 s (packets in a socket buffer block the kernel never retires);
# prints "drained drain_ms"
drain_tcpdump() {
  local err=$1 t0 end last="" changed c r d line
  t0=$(now_ms); end=$(( t0 + 10000 )); changed=$t0
  while [ "$(now_ms)" -lt "$end" ]; do
    kill -USR1 "$TD_PID" 2>/dev/null || break
    sleep 0.1
    line=$(grep 'packets captured,' "$err" | tail -1 || true)
    [ "$line" = "$last" ] || { last=$line; changed=$(now_ms); }
    read -r c r d < <(counters <(printf '%s\n' "$line"))
    if [ "$r" -gt 0 ] && { [ $(( c + d )) -ge "$r" ] || [ $(( $(now_ms) - changed )) -ge 1500 ]; }; then
      echo "true $(( $(now_ms) - t0 ))"; return
    fi
  done
  echo "false $(( $(now_ms) - t0 ))"
}

# stop_reader: part E's streamread ends (its streams ended with the capture; SIGINT stops
# the scraper, and gives readers still reading 15 s more)
stop_reader() {
  [ -n "$RD_PID" ] || return 0
  stop_pid "$RD_PID" 20 INT; RD_PID=""
}

# ---------------------------------------------------------------- loads
start_server() { # LOAD TAG
  case $1 in
    udp64)
      ip netns exec "$RX" "$BLAST" -sink "$B:$UDP_PORT" -t "$(( T + 30 ))s" 2>"$2.sink.err" &
      SRV_PID=$!
      poll 10 grep -q "sink ready" "$2.sink.err" || die "blast sink did not start: $(cat "$2.sink.err")" ;;
    tcp1)
      ip netns exec "$RX" iperf3 -s -1 -B "$B" -p "$IPERF_PORT" >"$2.iperf-server.log" 2>&1 &
      SRV_PID=$!
      iperf_listening() { [ -n "$(ip netns exec "$RX" ss -Hltn "sport = :$IPERF_PORT")" ]; }
      poll 10 iperf_listening || die "iperf3 server did not start: $(cat "$2.iperf-server.log")" ;;
  esac
}

run_client() { # LOAD TAG DURATION_S; returns the client's status
  case $1 in
    udp64) ip netns exec "$TX" timeout "$(( $3 + 30 ))" "$BLAST" -dst "$B:$UDP_PORT" -l 64 -t "${3}s" >"$2.blast.json" 2>"$2.blast.err" ;;
    tcp1)  ip netns exec "$TX" timeout "$(( $3 + 30 ))" iperf3 -c "$B" -p "$IPERF_PORT" -t "$3" -J >"$2.iperf.json" 2>"$2.iperf.err" ;;
  esac
}

# ---------------------------------------------------------------- one run
run_one() { # ROUND ORDER LOAD CONFIG SNAPLEN
  local round=$1 order=$2 load=$3 cfg=${4%%+*} variant snap=$5 tag rc=0 err=""
  local rk0=0 rd_json=null ticks_field=pipeline_ticks
  variant=$(variant_of "$4")
  local rx0 rx1 k0 k1 gk0 s0 s1 t0 t1 la drained=null drain_ms=null c=null r=null d=null
  local pipe_json=null files file_bytes gok=0
  tag=$RAW/r$round.$load.$4.$snap
  if [ "$PART" = stream ]; then
    tag=$RAW/stream.r$round.$load.$4
    # the readers' last bytes are sent after the drain: the pipeline's CPU is read at its end
    ticks_field=pipeline_ticks_end
  fi
  rm -rf "$CAP"; mkdir -p "$CAP"
  sync   # the previous run's dirty pages are not written back during this one
  start_capture "$4" "$snap" "$tag"
  start_server "$load" "$tag"
  la=$(cut -d' ' -f1 /proc/loadavg)
  rx0=$(rx_stats); s0=$(sectors)
  gk0=$(ticks "$PIPE_PID"); k0=$(( $(ticks "$TD_PID") + gk0 )); rk0=$(ticks "$RD_PID"); t0=$(now_s)
  run_client "$load" "$tag" "$T" || rc=$?
  t1=$(now_s); rx1=$(rx_stats)
  [ "$rc" = 0 ] || err="$load client exited $rc"
  stop_pid "$SRV_PID" 5; SRV_PID=""
  # part E's scraper stops with the load (Prometheus would scrape on, but a scrape of the
  # stopping pipeline measures nothing); the readers read until the capture ends their streams
  [ "$variant" != metrics ] || stop_reader
  case $cfg in
    tcpdump-ring)
      read -r drained drain_ms < <(drain_tcpdump "$tag.tcpdump.err")
      k1=$(ticks "$TD_PID")
      stop_pid "$TD_PID" 10 INT
      read -r c r d < <(counters "$tag.tcpdump.err") ;;
    pipeline | native)
      stop_pid "$PIPE_PID" 30 INT
      if pipe_json=$(jq -ec . "$tag.pipeline.json" 2>/dev/null); then
        gok=$(jq -r ".$ticks_field" <<<"$pipe_json")
        k1=$(( $(jq -r .tcpdump_ticks <<<"$pipe_json") + gok ))
        c=$(jq -r .captured <<<"$pipe_json"); r=$(jq -r .received <<<"$pipe_json"); d=$(jq -r .dropped <<<"$pipe_json")
        drained=$(jq -r .drained <<<"$pipe_json"); drain_ms=$(jq -r .drain_ms <<<"$pipe_json")
        [ -z "$(jq -r '.error // empty' <<<"$pipe_json")" ] || err="pipeline: $(jq -r .error <<<"$pipe_json")"
      else
        pipe_json=null; k1=$k0; err="pipeline printed no result: $(tail -3 "$tag.pipeline.err" | tr '\n' ' ')"
      fi ;;
    *) k1=$k0 ;;
  esac
  stop_reader
  if [ -f "$tag.streamread.json" ]; then
    rd_json=$(jq -ec . "$tag.streamread.json" 2>/dev/null) || {
      rd_json=null; err="${err:+$err; }streamread printed no result: $(tail -3 "$tag.streamread.err" | tr '\n' ' ')"; }
    if [ "$rd_json" != null ] && [ -n "$(jq -r '.error // empty' <<<"$rd_json")" ]; then
      err="${err:+$err; }streamread: $(jq -r .error <<<"$rd_json")"
    fi
  fi
  s1=$(sectors)
  PIPE_PID="" TD_PID=""
  files=$(find "$CAP" -type f | wc -l)
  file_bytes=$(find "$CAP" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  rm -rf "$CAP"

  local load_json=null
  case $load in
    udp64) load_json=$(jq -c '{sent_pps: .pps, sent: .sent, send_errors: .errors}' "$tag.blast.json" 2>/dev/null || echo null) ;;
    tcp1)  load_json=$(jq -c '{iperf_gbps: (.end.sum_received.bits_per_second / 1e9), retransmits: .end.sum_sent.retransmits}' \
             "$tag.iperf.json" 2>/dev/null || echo null) ;;
  esac
  # shellcheck disable=SC2016  # $-names below are jq variables
  jq -nc --argjson round "$round" --argjson order "$order" --arg load "$load" --arg config "$cfg" \
    --argjson snaplen "$snap" --argjson t0 "$t0" --argjson t1 "$t1" --argjson loadavg "$la" \
    --arg rx0 "$rx0" --arg rx1 "$rx1" --argjson k0 "$k0" --argjson k1 "$k1" --argjson gk0 "$gk0" --argjson gok "$gok" \
    --argjson hz "$CLK_TCK" --argjson s0 "$s0" --argjson s1 "$s1" --arg dev "$DEV" \
    --argjson c "$c" --argjson r "$r" --argjson d "$d" --argjson drained "$drained" --argjson drain_ms "$drain_ms" \
    --argjson files "$files" --argjson file_bytes "$file_bytes" --argjson ld "$load_json" \
    --argjson pipe "$pipe_json" --arg err "$err" --arg part "$PART" --arg variant "$variant" \
    --argjson rd "$rd_json" --argjson rk0 "$rk0" --arg scrape "$SCRAPE_INTERVAL" '
    ($t1 - $t0) as $w
    | ($rx0 | split(" ") | map(tonumber)) as $a | ($rx1 | split(" ") | map(tonumber)) as $b
    | {round: $round, order: $order, load: $load, config: $config,
       snaplen: (if $config == "none" then null else $snaplen end),
       start: ($t0 | floor | todate), window_s: $w, loadavg1: $loadavg,
       rx_packets: ($b[0] - $a[0]), rx_pps: (($b[0] - $a[0]) / $w),
       rx_gbps: (($b[1] - $a[1]) * 8 / $w / 1e9)}
      + ($ld // {})
      + {throughput: (if $load == "tcp1" then ($ld.iperf_gbps // null) else (($b[0] - $a[0]) / $w) end),
         throughput_unit: (if $load == "tcp1" then "Gbit/s" else "packets/s" end)}
      + (if $config == "none" then {} else
          {captured: $c, received: $r, dropped: $d,
           drop_pct: (if ($r // 0) > 0 then 100 * $d / $r else null end),
           unaccounted: (if $r == null then null else $r - $c - $d end),
           drained: $drained, drain_ms: $drain_ms,
           cpu_pct: (100 * ($k1 - $k0) / $hz / $w),
           cpu_pct_go: (if $config == "pipeline" or $config == "native" then 100 * ($gok - $gk0) / $hz / $w else null end),
           files: $files, file_bytes: $file_bytes}
          + (if $pipe == null then {} else
              {ring_packets: $pipe.ring_packets, ring_bytes: $pipe.ring_bytes, ring_rotations: $pipe.ring_rotations}
            end)
        end)
      + {dev: $dev, dev_written_bytes: (if $dev == "" then null else ($s1 - $s0) * 512 end)}
      + (if $part != "stream" then {} else
          {variant: $variant,
           readers: (if $variant | startswith("r") then ($variant[1:] | tonumber) else 0 end),
           scrape_interval: (if $variant == "metrics" then $scrape else null end),
           captured_pps: (if $c == null then null else $c / $w end)}
          + (if $pipe == null then {} else
              {stream_readers: $pipe.stream_readers, stream_refused: $pipe.stream_refused,
               stream_cut: $pipe.stream_cut, metrics_scrapes: $pipe.metrics_scrapes,
               stats_pushes: $pipe.stats_pushes, server_error: $pipe.server_error}
            end)
          + (if $rd == null then {} else
              {reader_packets: $rd.packets, reader_bytes: $rd.bytes,
               reader_packets_each: ($rd.readers | map(.packets)),
               reader_ended: ($rd.readers | map(.ended)),
               readers_cut: $rd.cut, readers_failed: $rd.failed,
               scrapes: $rd.scrapes, scrape_errors: $rd.scrape_errors, scrape_bytes: $rd.scrape_bytes,
               scrape_mean_ms: $rd.scrape_mean_ms, scrape_max_ms: $rd.scrape_max_ms,
               reader_cpu_pct: (100 * ($rd.ticks - $rk0) / $hz / $w)}
            end)
        end)
      + (if $err == "" then {} else {error: $err} end)' | tee -a "$RESULTS" >&2
}

# ---------------------------------------------------------------- main
apt_need iperf3 tcpdump jq iproute2 util-linux iputils-ping
if [ ! -x "$PIPELINE" ] || [ ! -x "$BLAST" ] || [ ! -x "$STREAMREAD" ]; then build_tools; fi
DEV=$(block_dev "$(dirname "$CAP")")
[ -n "$DEV" ] || log "capture dir $CAP is on no block device: written bytes are not counted"
setup
if [ "$WARMUP" = 1 ]; then
  log "$PART: warm-up (2 s tcp1, not recorded)"
  start_server tcp1 "$RAW/warmup"
  run_client tcp1 "$RAW/warmup" 2 || die "warm-up iperf3 failed: $(cat "$RAW/warmup.iperf.err")"
  stop_pid "$SRV_PID" 5; SRV_PID=""
fi
t_start=$(now_ms)
n=${#CONFIGS[@]}
for round in $(seq 1 "$REPS"); do
  for load in $LOADS; do
    for i in $(seq 0 $(( n - 1 ))); do
      # rotate the order by one each round: the baseline is not always first
      k=$(( (i + round - 1) % n ))
      cfg=${CONFIGS[$k]%%:*}; snap=${CONFIGS[$k]##*:}
      log "$PART: round $round/$REPS $load $cfg$([ "$cfg" = none ] || echo " -s $snap")"
      run_one "$round" "$i" "$load" "$cfg" "$snap"
    done
  done
done
log "$PART: $(( REPS * n * $(wc -w <<<"$LOADS") )) runs in $(( ($(now_ms) - t_start) / 1000 )) s; results $RESULTS"
