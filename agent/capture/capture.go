// Package capture runs packet captures for the pods of this node. The Manager converges the
// captures that run to the desired ones (one Spec per pod, decided by the agent's sync), an
// Engine opens packet sources inside a pod's network namespace, and the Ring writes the
// stream to disk with tcpdump's -C/-W semantics and names.
//
// This package imports neither the agent controller nor the policy engine: it is told what to
// capture and reports back through the Notifier and the metrics.
package capture

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// DefaultFileSize is the size of one ring file: tcpdump's -C unit, 1,000,000 bytes (not MiB).
const DefaultFileSize = 1_000_000

// Snaplen bounds, in bytes kept of each packet; this package owns them (policy decisions are
// checked against them with CheckSnaplen, the tcpdump engine refuses more than MaxSnaplen).
const (
	// DefaultSnaplen keeps whole packets: tcpdump's default, and what a Spec's 0 means.
	DefaultSnaplen = 262144
	// MaxSnaplen is the most tcpdump keeps of a packet (its MAXIMUM_SNAPLEN).
	MaxSnaplen = DefaultSnaplen
	// MinSnaplen keeps the link, IPv4 and transport headers: less makes a capture that
	// shows nothing.
	MinSnaplen = 64
)

// CheckSnaplen accepts a Spec's snaplen: 0 (DefaultSnaplen) or MinSnaplen to MaxSnaplen.
func CheckSnaplen(n int) error {
	if n != 0 && (n < MinSnaplen || n > MaxSnaplen) {
		return fmt.Errorf("snaplen: must be 0 (whole packets) or from %d to %d", MinSnaplen, MaxSnaplen)
	}
	return nil
}

// Spec is the desired capture of one pod. It is built by the agent from validated input only.
type Spec struct {
	Namespace string
	Pod       string
	UID       string
	Files     int    // ring size N (tcpdump -W)
	FileSize  int64  // bytes per file before rotation (tcpdump -C 1 = 1,000,000)
	Snaplen   int    // bytes kept of each packet; 0 means DefaultSnaplen
	Filter    string // validated BPF expression; "" captures everything
	Source    string // who asked: SourceManual (annotation) or SourcePolicy
	// HostNetwork: the pod uses the node's network namespace and --allow-host-network lets
	// it be captured. Otherwise a target found in the agent's (the node's) network namespace
	// is refused: a capture there would record the whole node's traffic.
	HostNetwork bool

	// MaxDuration ends the capture that long after it started (0: until it is no longer
	// desired). A later Ensure with another MaxDuration moves the deadline without
	// restarting the capture.
	MaxDuration time.Duration
	// Reason says why the capture runs (the policy's reason); informative only.
	Reason string

	// Alerts are the fingerprints of the alerts behind the capture, comma-separated (a
	// string keeps Spec comparable); "" for none. Informative: capture.json, the API.
	Alerts string
	// Trigger describes what started the capture for the people who open the file: one item
	// a line (the rule's reason; each alert's name, fingerprint and generatorURL). A pcapng
	// capture writes each line as a comment of its section header. Informative only.
	Trigger string
	// Format is the files' format: FormatPcap ("" too: tcpdump's, byte-compatible) or
	// FormatPcapng. Manual captures are always pcap.
	Format string
	// StopGrace keeps the capture running this long after it is no longer desired (to
	// record the recovery after an alert resolved); 0 stops at once.
	StopGrace time.Duration
	// Cooldown: after this capture of the pod ended (no longer desired, after its stop
	// grace, or max_duration), no policy or alert capture of the pod starts again for this
	// long (a flapping alert cannot restart captures in a loop). Manual captures ignore it.
	Cooldown time.Duration
	// Engine names the engine that captures: EngineTcpdump, EngineNative, or "" for the
	// manager's DefaultEngine (Ensure replaces "" by it). Another engine restarts the capture.
	Engine string
}

// Capture engines: the values of Spec.Engine, of capture.json's engine and of the metrics'
// "engine" label. This package owns them; the agent maps a decision's engine onto them.
const (
	// EngineTcpdump runs `nsenter -n -t <pid> tcpdump` and reads its pcap stream: the
	// default, the original tool's way (package tcpdump).
	EngineTcpdump = "tcpdump"
	// EngineNative reads an AF_PACKET TPACKET_V3 ring opened in the pod's network namespace,
	// in process (package native).
	EngineNative = "native"
)

// engines are every engine name, the "engine" label values the manager initialises.
var engines = []string{EngineTcpdump, EngineNative}

// File formats of a Spec.
const (
	FormatPcap   = "pcap"
	FormatPcapng = "pcapng"
)

// Capture sources. A manual capture's ring lives directly in the pod's directory and is
// deleted when it stops; any other capture writes a directory of its own under the pod's
// (<source>-<start time>/) that is kept after it stops, under the retention rules. They are
// also the values of the metrics' "source" label: this package owns them, not package
// metrics, because it gives them their meaning, and metrics stays a leaf that it imports.
const (
	SourceManual = "manual"
	SourcePolicy = "policy"
	// SourceAlert is a policy capture whose decision names alerts (Spec.Alerts).
	SourceAlert = "alert"
	// SourceRecorder is a pod's flight recorder (data.podcap.recorder): a small ring that
	// runs beside the pod's other capture, in a slot of its own, in <pod dir>/recorder/. Its
	// files are deleted when it stops; when a policy or alert capture of the pod starts, the
	// files it holds then are hard-linked into that capture's pre-trigger/ directory.
	SourceRecorder = "recorder"
)

// sources are every Spec.Source, the "source" label values the manager initialises.
var sources = []string{SourceManual, SourcePolicy, SourceAlert, SourceRecorder}

// RecorderDir is the directory of a pod's flight recorder, in the pod's directory; it has no
// "-", so retention never takes it for a finished capture's directory.
const RecorderDir = "recorder"

// PreTriggerDir is the directory, in a policy or alert capture's own, of the flight
// recorder's files preserved as the capture started.
const PreTriggerDir = "pre-trigger"

// session reports whether the capture writes a directory of its own (<source>-<start time>/)
// that is kept after it stops: a policy or alert capture.
func (s Spec) session() bool {
	return s.Source != SourceManual && s.Source != SourceRecorder
}

// slot is the key of the capture among the manager's: a pod has two slots, one for its
// capture (manual, policy or alert) and one for its flight recorder.
func (s Spec) slot() string {
	if s.Source == SourceRecorder {
		return recorderSlot(s.Namespace, s.Pod)
	}
	return Key(s.Namespace, s.Pod)
}

// recorderSlot is the slot of a pod's flight recorder: its Key and a suffix no pod name has.
func recorderSlot(namespace, pod string) string { return Key(namespace, pod) + "#" + SourceRecorder }

func (s Spec) snaplen() int {
	if s.Snaplen <= 0 {
		return DefaultSnaplen
	}
	return s.Snaplen
}

// sessionMetaReserve is what a non-manual capture reserves for its capture.json beside the
// ring (a few hundred bytes; a reason, a filter and a trigger at their caps, MaxTriggerLen
// and MaxAlerts, stay under it).
const sessionMetaReserve = 8192

// Bounds of a Spec's informative alert fields, which the agent enforces as it builds a Spec
// (they are copied into capture.json, the API and a pcapng section header).
const (
	// MaxAlerts is the most fingerprints Spec.Alerts lists.
	MaxAlerts = 32
	// MaxTriggerLen is the most bytes of Spec.Trigger.
	MaxTriggerLen = 2048
)

// format is the files' format, FormatPcap for "".
func (s Spec) format() string {
	if s.Format == "" {
		return FormatPcap
	}
	return s.Format
}

func (s Spec) fileSize() int64 {
	if s.FileSize <= 0 {
		return DefaultFileSize
	}
	return s.FileSize
}

// worstCase is what the capture's files may hold on disk.
func (s Spec) worstCase() int64 {
	n := WorstCaseBytes(s.Files, s.fileSize(), s.snaplen())
	if s.session() {
		n += sessionMetaReserve
	}
	return n
}

// sameCapture reports whether o asks for the capture s describes: everything but the
// deadline and what is informative or only matters at the end (reason, alerts, trigger,
// stop grace, cooldown) must match.
func (s Spec) sameCapture(o Spec) bool {
	s.MaxDuration, s.Reason, s.Alerts, s.Trigger, s.StopGrace, s.Cooldown = o.MaxDuration, o.Reason, o.Alerts, o.Trigger, o.StopGrace, o.Cooldown
	return s == o
}

// Target is where to capture: the pod's network namespace, as found through the CRI. An
// engine enters NetNSPath when it is set, else the node's network namespace for NodeNetwork,
// else PID's (the fallback, which needs the agent to see host PIDs: hostPID).
type Target struct {
	// NetNSPath is the sandbox's network namespace file as the runtime pinned it (containerd
	// and CRI-O: a bind mount of the namespace, e.g. /var/run/netns/cni-…); "" when the runtime
	// reports none (a hostNetwork pod, a runtime that does not pin namespaces).
	NetNSPath string
	// NodeNetwork: the runtime gives the sandbox no network namespace of its own: the pod uses
	// the node's (hostNetwork).
	NodeNetwork bool
	// PID is the host PID of a running container of the pod, and SandboxPID that of the
	// sandbox's own process (pause or infra; 0 when the runtime runs none). When the PID is
	// used, the network namespace it leads to must also be SandboxPID's, so that a PID reused
	// since the lookup does not lead into another pod's namespace.
	PID         int
	SandboxPID  int
	SandboxID   string
	ContainerID string
}

// Resolver finds a pod's network namespace. agent/cri implements it over the CRI socket.
type Resolver interface {
	Resolve(ctx context.Context, namespace, name, uid string) (Target, error)
}

// ErrPodNotFound is returned by a Resolver when the runtime has no ready sandbox or no running
// container for the pod (yet): a transient condition, retried.
var ErrPodNotFound = errors.New("pod not found in the container runtime")

// SourceOptions are what an engine needs to open a capture.
type SourceOptions struct {
	Snaplen int    // 0 means DefaultSnaplen
	Filter  string // validated BPF expression, passed as one argv element
	// HostNetwork allows a target in the node's network namespace (Spec.HostNetwork); an
	// engine refuses such a target otherwise.
	HostNetwork bool
}

// Engine opens packet sources inside a network namespace.
type Engine interface {
	Open(ctx context.Context, t Target, o SourceOptions) (Source, error)
}

// Source is a live packet stream from one capture process or socket.
//
// A source ends in two ways. Stop ends it gracefully: the capture stops taking packets,
// and ReadPacket goes on returning those it had already taken (for tcpdump: what is in its
// buffer and in the pipe) until io.EOF. Close ends it at once: whatever was not read yet is
// discarded. Pump stops its source and reads it to the end; Close comes after, to reap the
// capture and get its verdict.
type Source interface {
	// LinkType and Snaplen describe the stream (the pcap global header).
	LinkType() layers.LinkType
	Snaplen() uint32
	// ReadPacket returns the next packet; data is valid until the next call. It returns
	// io.EOF when the capture ended: after Stop, once the packets the capture had taken
	// have all been returned (a record torn by the end of the stream is the end, not an
	// error); after Close, at once.
	ReadPacket() (ci gopacket.CaptureInfo, data []byte, err error)
	// Stop asks the capture to end and returns at once. The source bounds the end itself
	// (tcpdump: SIGTERM, SIGKILL after its stop timeout): after that, ReadPacket reaches
	// io.EOF once it has returned what was taken before. It may be called more than once,
	// from any goroutine.
	Stop()
	// RequestStats asks for fresh kernel counters (tcpdump: SIGUSR1); best effort, async.
	RequestStats()
	// Stats returns the last kernel counters seen.
	Stats() Stats
	// Close stops the capture if Stop was not called, discards what was not read (a
	// blocked ReadPacket returns io.EOF), and reaps the capture: bounded by the stop
	// timeout. It returns why the capture ended if that was not Stop or Close (e.g.
	// tcpdump's own error). Afterwards Stats are the final counters.
	Close() error
}

// Stats are a capture's kernel counters, as tcpdump reports them.
type Stats struct {
	Captured  uint64 // packets tcpdump handed on ("packets captured")
	Received  uint64 // packets received by filter
	Dropped   uint64 // packets dropped by kernel
	IfDropped uint64 // packets dropped by interface (when reported)
}
