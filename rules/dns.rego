# dns.rego: pods labelled podcap.io/capture-dns=true get their DNS traffic captured: the BPF
# filter "udp port 53" and a snaplen of 1500 bytes (a whole DNS message up to a usual MTU, where
# the default 262144 would reserve buffer space for nothing). It outranks labels.rego: a pod with
# both labels gets the narrower capture.
package podcap

captures contains {
	"priority": 20,
	"reason": "label podcap.io/capture-dns=true",
	"files": 5,
	"file_size_bytes": 1000000,
	"snaplen": 1500,
	"filter": "udp port 53",
} if input.pod.labels["podcap.io/capture-dns"] == "true"
