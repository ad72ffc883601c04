// Package metrics holds podcap's Prometheus collectors. One Metrics value is built per agent on
// the registry the caller injects; every metric is prefixed podcap_, counters end in _total,
// and per-capture series carry only the namespace and pod of a running capture (bounded by
// --max-concurrent-captures) and are deleted when the capture ends.
package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons of podcap_capture_failures_total.
const (
	FailureResolve = "resolve" // the pod's network namespace could not be found through the CRI
	FailureStart   = "start"   // the capture process did not start (nsenter/tcpdump error)
	FailureExited  = "exited"  // the capture process ended on its own
	FailureFiles   = "files"   // the ring files could not be written
)

// Reasons of podcap_invalid_capture_requests_total.
const (
	InvalidValue       = "invalid_value" // the annotation's value is not an accepted ring size
	InvalidHostNetwork = "host_network"  // hostNetwork pod without --allow-host-network
	InvalidName        = "invalid_name"  // namespace or pod name unusable as a path element
	InvalidOverBudget  = "over_budget"   // the capture's worst case exceeds the node's byte budget
	InvalidEngine      = "engine"        // the capture asks for an engine the agent cannot run (native not built)
)

// Reasons of podcap_captures_queued: what a queued capture waits for.
const (
	QueuedConcurrency = "concurrency" // a slot under --max-concurrent-captures
	QueuedBudget      = "budget"      // room for its worst case under --retention-max-bytes
	QueuedCooldown    = "cooldown"    // the end of the cooldown of the pod's last policy or alert capture
	// QueuedNativeBuffer: room for its kernel ring (--native-buffer-bytes) under --native-buffer-budget.
	QueuedNativeBuffer = "native_buffer"
)

// Reasons of podcap_policy_errors_total.
const (
	PolicyErrorEval    = "eval"             // the policy could not be evaluated (or decoded) for a pod
	PolicyErrorInvalid = "invalid_decision" // a decision failed validation (filter, sizes, ...)
	PolicyErrorVeto    = "manual_veto"      // a manual request vetoed by data.podcap.manual_allowed
)

// Metrics are the agent's collectors.
type Metrics struct {
	CapturesRunning *prometheus.GaugeVec // source: capture.Source*
	CapturesQueued  *prometheus.GaugeVec // reason
	// EngineCapturesRunning: podcap_engine_captures_running, by engine (capture.Engine*).
	// podcap_captures_running keeps its one label, source: scripts select on it.
	EngineCapturesRunning *prometheus.GaugeVec
	NativeRingBytes       prometheus.Gauge         // kernel ring bytes reserved by native captures
	CaptureStarts         *prometheus.CounterVec   // source: capture.Source*
	CaptureFailures       *prometheus.CounterVec   // reason
	CaptureRestarts       prometheus.Counter       //
	InvalidRequests       *prometheus.CounterVec   // reason
	Packets               *prometheus.CounterVec   // namespace, pod
	Bytes                 *prometheus.CounterVec   // namespace, pod
	KernelDrops           *prometheus.CounterVec   // namespace, pod
	FileRotations         *prometheus.CounterVec   // namespace, pod
	SyncErrors            prometheus.Counter       //
	SyncDuration          prometheus.Histogram     //
	CaptureFileBytes      prometheus.Collector     // bytes of capture files on disk, read from SetFileBytes's func
	RetentionEvictions    *prometheus.CounterVec   // reason
	PolicyEvaluations     *prometheus.CounterVec   // result
	PolicyErrors          *prometheus.CounterVec   // reason
	BudgetBytes           prometheus.Gauge         // --retention-max-bytes
	ReservedBytes         prometheus.Gauge         // worst cases reserved by the captures holding a slot
	CRILookupDuration     *prometheus.HistogramVec // result: LookupOK, LookupError
	FirstPacket           *prometheus.HistogramVec // source: capture.Source*

	fileBytes atomic.Pointer[func() int64] // what podcap_capture_file_bytes reads
}

// Results of podcap_cri_lookup_duration_seconds.
const (
	LookupOK    = "ok"    // the pod's sandbox and network namespace were found
	LookupError = "error" // the runtime answered an error, or the pod is not (or no longer) there
)

// SetFileBytes sets what podcap_capture_file_bytes reads at each scrape (the capture manager's
// count of what its files hold).
func (m *Metrics) SetFileBytes(f func() int64) { m.fileBytes.Store(&f) }

// New builds the collectors and registers them on reg. Label values known up front are
// initialised so that rate() works from the first scrape; the "source" values are the capture
// package's (capture.Source*), which initialises them.
func New(reg prometheus.Registerer) *Metrics {
	perCapture := []string{"namespace", "pod"}
	m := &Metrics{
		CapturesRunning: gaugeVec("podcap_captures_running", "Captures whose capture process is running, by what started them.", "source"),
		CapturesQueued: gaugeVec("podcap_captures_queued",
			"Captures waiting to start, by what they wait for (concurrency: a slot under --max-concurrent-captures; budget: room for their worst case under --retention-max-bytes; cooldown: the end of the cooldown of the pod's last policy or alert capture; native_buffer: room for their kernel ring under --native-buffer-budget).", "reason"),
		EngineCapturesRunning: gaugeVec("podcap_engine_captures_running", "Captures whose capture process or socket is running, by engine (tcpdump, native).", "engine"),
		NativeRingBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "podcap_native_ring_reserved_bytes",
			Help: "Bytes of kernel rings reserved by the native engine's captures (each --native-buffer-bytes), bounded by --native-buffer-budget."}),
		CaptureStarts:      counterVec("podcap_capture_starts_total", "Captures started, by what started them.", "source"),
		CaptureFailures:    counterVec("podcap_capture_failures_total", "Capture attempts that failed or ended on their own, by reason.", "reason"),
		CaptureRestarts:    prometheus.NewCounter(prometheus.CounterOpts{Name: "podcap_capture_restarts_total", Help: "Capture processes restarted after they died or the pod's container changed."}),
		InvalidRequests:    counterVec("podcap_invalid_capture_requests_total", "Capture requests refused because they were invalid, by reason.", "reason"),
		Packets:            counterVec("podcap_capture_packets_total", "Packets written to the capture files of a running capture.", perCapture...),
		Bytes:              counterVec("podcap_capture_bytes_total", "Bytes of packet data (captured length, without pcap headers) written for a running capture.", perCapture...),
		KernelDrops:        counterVec("podcap_capture_kernel_drops_total", "Packets the kernel dropped before the capture could read them (tcpdump's counter).", perCapture...),
		FileRotations:      counterVec("podcap_capture_file_rotations_total", "Ring file rotations of a running capture.", perCapture...),
		SyncErrors:         prometheus.NewCounter(prometheus.CounterOpts{Name: "podcap_sync_errors_total", Help: "Pod syncs that failed and were retried."}),
		RetentionEvictions: counterVec("podcap_retention_evictions_total", "Finished capture directories removed by retention, by reason (age, budget).", "reason"),
		PolicyEvaluations:  counterVec("podcap_policy_evaluations_total", "Policy decisions for pods, by result (capture, no_capture, error, cached).", "result"),
		PolicyErrors:       counterVec("podcap_policy_errors_total", "Policy problems reported on pods, by reason (eval, invalid_decision, manual_veto).", "reason"),
		SyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "podcap_sync_duration_seconds", Help: "Time to sync one pod.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
		BudgetBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "podcap_capture_budget_bytes",
			Help: "The node's byte budget of capture files (--retention-max-bytes)."}),
		ReservedBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "podcap_capture_reserved_bytes",
			Help: "Bytes of the node's budget reserved by the captures holding a slot: each its worst case (files × (file size + snaplen)), or what its pre-trigger files hold."}),
		CRILookupDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "podcap_cri_lookup_duration_seconds",
			Help:    "Time to find a pod's sandbox and network namespace through the CRI socket, by result (ok, error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"result"}),
		FirstPacket: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "podcap_capture_first_packet_seconds",
			Help:    "Time from a capture being requested to its first packet in the ring, by what started it; it includes waiting in the queue and for the pod's first packet.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"source"}),
	}
	m.CaptureFileBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "podcap_capture_file_bytes",
		Help: "Bytes of capture files on disk under the capture directory: running captures' rings as they are written, the rest as of the last retention sweep.",
	}, func() float64 {
		if f := m.fileBytes.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	reg.MustRegister(m.CapturesRunning, m.CapturesQueued, m.EngineCapturesRunning, m.NativeRingBytes, m.CaptureStarts, m.CaptureFailures,
		m.CaptureRestarts, m.InvalidRequests, m.Packets, m.Bytes, m.KernelDrops, m.FileRotations,
		m.SyncErrors, m.SyncDuration, m.CaptureFileBytes, m.RetentionEvictions, m.PolicyEvaluations, m.PolicyErrors,
		m.BudgetBytes, m.ReservedBytes, m.CRILookupDuration, m.FirstPacket)
	initLabels(m.CRILookupDuration, LookupOK, LookupError)
	initLabels(m.CaptureFailures, FailureResolve, FailureStart, FailureExited, FailureFiles)
	initLabels(m.CapturesQueued, QueuedConcurrency, QueuedBudget, QueuedCooldown, QueuedNativeBuffer)
	initLabels(m.InvalidRequests, InvalidValue, InvalidHostNetwork, InvalidName, InvalidOverBudget, InvalidEngine)
	initLabels(m.RetentionEvictions, "age", "budget")
	initLabels(m.PolicyEvaluations, "capture", "no_capture", "error", "cached")
	initLabels(m.PolicyErrors, PolicyErrorEval, PolicyErrorInvalid, PolicyErrorVeto)
	return m
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

// initLabels creates the series of a one-label vector for each value.
func initLabels[T any](v interface{ WithLabelValues(...string) T }, values ...string) {
	for _, value := range values {
		v.WithLabelValues(value)
	}
}

// InitCapture creates the per-capture series of a capture that starts, at 0: a series that
// appeared with its first increment would hide that increment from rate() and increase()
// (a first burst of kernel drops, say).
func (m *Metrics) InitCapture(namespace, pod string) {
	for _, c := range []*prometheus.CounterVec{m.Packets, m.Bytes, m.KernelDrops, m.FileRotations} {
		c.WithLabelValues(namespace, pod)
	}
}

// ForgetCapture deletes the per-capture series of a capture that ended.
func (m *Metrics) ForgetCapture(namespace, pod string) {
	l := prometheus.Labels{"namespace": namespace, "pod": pod}
	m.Packets.Delete(l)
	m.Bytes.Delete(l)
	m.KernelDrops.Delete(l)
	m.FileRotations.Delete(l)
}

// RegisterPolicyStatus registers the policy reload gauges, read from status at scrape time:
// podcap_policy_last_reload_successful and podcap_policy_last_reload_success_timestamp_seconds.
func RegisterPolicyStatus(reg prometheus.Registerer, status func() (ok bool, lastSuccess time.Time)) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podcap_policy_last_reload_successful",
			Help: "Whether the last policy reload compiled (1) or failed and the previous policy stays (0).",
		}, func() float64 {
			if ok, _ := status(); ok {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podcap_policy_last_reload_success_timestamp_seconds",
			Help: "Time of the last successful policy reload, in seconds since the epoch (0: never).",
		}, func() float64 {
			_, t := status()
			if t.IsZero() {
				return 0
			}
			return float64(t.UnixNano()) / 1e9
		}),
	)
}

// How the API server protects its connections, the values of podcap_api_tls_info's "tls" label.
const (
	APITLSFiles      = "files"       // the mounted key pair (--tls-cert-file, --tls-private-key-file)
	APITLSSelfSigned = "self_signed" // a certificate the agent made at start
	APITLSOff        = "off"         // plain HTTP: --insecure-serve-api-over-http
)

// RegisterAPITLS registers podcap_api_tls_info, 1 with the label tls = how the API server
// protects its connections (APITLSFiles, APITLSSelfSigned, APITLSOff); alert on tls="off".
func RegisterAPITLS(reg prometheus.Registerer, mode string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "podcap_api_tls_info",
		Help: `How the HTTP API protects its bearer tokens: tls="files" (mounted key pair), "self_signed" (made at start) or "off" (plain HTTP, --insecure-serve-api-over-http).`,
	}, []string{"tls"})
	g.WithLabelValues(mode).Set(1)
	reg.MustRegister(g)
}

// RegisterBuildInfo registers podcap_build_info, 1 with the labels version, commit and
// goversion of the running agent (agent/version): one series per agent, so that
// count by (version) (podcap_build_info) shows a rollout.
func RegisterBuildInfo(reg prometheus.Registerer, version, commit, goVersion string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "podcap_build_info",
		Help: "The agent's build: version, git commit and Go release; always 1.",
	}, []string{"version", "commit", "goversion"})
	g.WithLabelValues(version, commit, goVersion).Set(1)
	reg.MustRegister(g)
}
