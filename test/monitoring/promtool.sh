#!/usr/bin/env bash
# promtool.sh: `promtool check rules` and `promtool test rules` on deploy/monitoring (make
# monitoring-test). promtool comes from Debian's prometheus package, which test/cluster's
# build installs too; missing, it is installed here as root (the same apt-get as
# cluster.sh's), unless PODCAP_NO_APT=1. PROMTOOL=<path> picks another binary.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=$REPO/deploy/monitoring

die() { echo "monitoring-test: $*" >&2; exit 1; }

promtool=${PROMTOOL:-$(command -v promtool || true)}
if [ -z "$promtool" ]; then
  [ "${PODCAP_NO_APT:-0}" != 1 ] || die "promtool not found (PODCAP_NO_APT=1): install Debian's prometheus package"
  [ "$(id -u)" = 0 ] || die "promtool not found: install Debian's prometheus package (apt-get install prometheus), or run as root"
  echo "monitoring-test: apt-get install prometheus (for promtool)" >&2
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if ! { apt-get -o DPkg::Lock::Timeout=600 update &&
         DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends prometheus; } >"$log" 2>&1; then
    tail -20 "$log" >&2
    die "apt-get install prometheus failed"
  fi
  promtool=$(command -v promtool) || die "promtool still not found after installing prometheus"
fi

"$promtool" --version 2>&1 | head -1
# the plain rules file; prometheusrule.yaml holds the same groups byte for byte (go test
# ./deploy/monitoring/ checks it), so checking one checks both
"$promtool" check rules "$DIR/podcap-rules.yaml"
# rule_files in the tests are relative to the test files
cd "$DIR/tests"
"$promtool" test rules ./*.yaml
