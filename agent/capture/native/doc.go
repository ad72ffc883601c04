// Package native is the high-rate capture engine: it opens an AF_PACKET socket with a
// TPACKET_V3 ring inside a pod's network namespace and reads it in process, without
// nsenter or a tcpdump process. The namespace is entered with setns on a goroutine locked to
// its OS thread that never unlocks it, so the thread ends with the goroutine and never
// runs other code in the pod's namespace; the socket keeps the namespace it was made in.
//
// Its stream is the tcpdump engine's: every interface of the namespace (tcpdump -i any),
// link type LINUX_SLL2 with the header libpcap builds from each packet's sockaddr_ll, the
// same snaplen rule, and filters in tcpdump's syntax compiled by tcpdump itself
// (`tcpdump -ddd -y LINUX_SLL2`) and adjusted for the cooked socket as libpcap adjusts them;
// a filter that cannot be adjusted exactly is refused, never widened.
//
// On other systems the package builds, and New reports that the engine needs Linux.
package native
