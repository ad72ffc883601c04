# labels.rego: capture every pod labelled podcap.io/capture=true, all of its traffic, into a
# ring of 5 files of 1 MB (the manual annotation's default file size).
package podcap

captures contains {
	"priority": 10,
	"reason": "label podcap.io/capture=true",
	"files": 5,
	"file_size_bytes": 1000000,
} if input.pod.labels["podcap.io/capture"] == "true"
