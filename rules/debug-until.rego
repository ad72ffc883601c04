# debug-until.rego: a pod annotated podcap.io/debug-until=<RFC3339 time> is captured whole until
# that time: while it is after input.now, with max_duration the time left (rounded up to the
# second), so the capture stops on time even if the pod is not evaluated again. A value that is
# not an RFC3339 time is ignored (no capture). It outranks the label rules: someone asked for
# this pod, for a while, on purpose.
package podcap

captures contains {
	"priority": 30,
	"reason": sprintf("annotation podcap.io/debug-until=%s", [until]),
	"files": 5,
	"file_size_bytes": 1000000,
	"max_duration": sprintf("%ds", [ceil((until_ns - now_ns) / 1e9)]),
} if {
	until := input.pod.annotations["podcap.io/debug-until"]
	until_ns := time.parse_rfc3339_ns(until)
	now_ns := time.parse_rfc3339_ns(input.now)
	until_ns > now_ns
}
