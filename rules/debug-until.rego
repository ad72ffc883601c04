# debug-until.rego: a pod annotated podcap.io/debug-until=<RFC3339 time> is captured whole until
# that time: while it is after input.now, with max_duration the time left (rounded up to the
# second), so the capture stops on time even if the pod is not evaluated again. The time left is
# clamped to the node's limit, input.limits.max_duration_seconds (the agent's
# --max-capture-duration; 24h when the input has none): a window further ahead than the limit
# gets a capture of the limit, not a decision the agent refuses (which captured nothing). Once
# the time left falls under the limit while the capture runs, max_duration follows it again and
# moves the deadline to the window's end; a capture that already ran its limit is not started
# again for the same pod and window. A value that is not an RFC3339 time is
# ignored (no capture). It outranks the label rules: someone asked for this pod, for a while, on
# purpose.
package podcap

captures contains {
	"priority": 30,
	"reason": sprintf("annotation podcap.io/debug-until=%s", [until]),
	"files": 5,
	"file_size_bytes": 1000000,
	"max_duration": sprintf("%ds", [min([ceil((until_ns - now_ns) / 1e9), node_limit("max_duration_seconds", 86400)])]),
} if {
	until := input.pod.annotations["podcap.io/debug-until"]
	until_ns := time.parse_rfc3339_ns(until)
	now_ns := time.parse_rfc3339_ns(input.now)
	until_ns > now_ns
}
