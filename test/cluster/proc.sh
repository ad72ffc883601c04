# shellcheck shell=bash
# proc.sh: process checks shared by test/cluster/common.sh and test/bench/lib.sh (sourced).

# pid_running PID: the process exists and is neither a zombie nor dead (kill -0 succeeds on
# zombies; PID 1 here reaps orphans only every few seconds). One read of /proc/PID/stat, whose
# state follows the last ')' (comm may hold spaces and parentheses): a check-then-read would
# take a process reaped between the two for running.
pid_running() {
  local stat state
  [[ ${1-} =~ ^[1-9][0-9]*$ ]] || return 1
  IFS= read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  state=${stat##*) }
  state=${state%% *}
  case $state in '' | Z | X | x) return 1 ;; esac
}
