# opt-out.rego: a pod labelled podcap.io/capture=never (any case: "Never", "NEVER") is never
# captured: a deny reason, so it wins over every candidate of every file (labels, dns,
# debug-until, alerts), forbids the flight recorder (recorder.rego) and sets manual_allowed to
# false (core.rego): "never" vetoes the manual annotation too, as a pod owner who opts out
# expects. It is the same label key as labels.rego's podcap.io/capture=true, so a pod carries
# one or the other.
package podcap

deny contains "label podcap.io/capture=never on the pod (opt-out.rego)" if {
	lower(input.pod.labels["podcap.io/capture"]) == "never"
}
