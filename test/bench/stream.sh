#!/usr/bin/env bash
# stream.sh: part E of `make bench`: what live-stream readers (1 and 10) and a /metrics
# scrape every 100 ms cost a capture, against the same capture without them in the same
# round: capture.sh's namespaces, loads and measurements with its BENCH_CAPTURE_PART=stream
# captures (see capture.sh). Results in $BENCH_OUT/stream.jsonl, raw outputs in
# $BENCH_OUT/raw/stream.*.
#
# Environment: as capture.sh, and BENCH_STREAM_ENGINES (default "pipeline native"),
# BENCH_SCRAPE_INTERVAL (default 100ms), BENCH_STATS_INTERVAL (default 5s: the Manager's
# per-pod push). Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_CAPTURE_PART=stream exec "$HERE/capture.sh" "$@"
