# recorder.rego: a flight recorder for every pod labelled podcap.io/recorder=true: an always-on
# ring of 2 files of 1 MB, beside any capture of the pod. Its files are not kept when it stops;
# when a policy or alert capture of the pod starts, the recorder's files of that moment are
# preserved in the new capture's pre-trigger/ directory (the minutes before the trigger).
#
# data.podcap.recorder is a decision of its own, not a candidate of core.rego's `captures`: a
# deny reason of namespace-deny.rego still forbids it.
package podcap

recorder := {
	"capture": true,
	"reason": "label podcap.io/recorder=true",
	"files": 2,
	"file_size_bytes": 1000000,
} if {
	input.pod.labels["podcap.io/recorder"] == "true"
	count(deny) == 0
}
