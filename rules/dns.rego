# dns.rego: pods labelled podcap.io/capture-dns=true get their DNS traffic captured: the BPF
# filter "udp port 53 or tcp port 53" (DNS over TCP too: truncated answers retried over TCP,
# zone transfers, resolvers that use TCP) and a snaplen of 1500 bytes (a whole DNS message up
# to a usual MTU, where the default 262144 would reserve buffer space for nothing; a TCP answer
# longer than that, seen as one coalesced segment, is cut at 1500 bytes). It outranks
# labels.rego: a pod with both labels gets the narrower capture.
package podcap

captures contains {
	"priority": 20,
	"reason": "label podcap.io/capture-dns=true",
	"files": 5,
	"file_size_bytes": 1000000,
	"snaplen": 1500,
	"filter": "udp port 53 or tcp port 53",
} if input.pod.labels["podcap.io/capture-dns"] == "true"
