// Package metrics holds podcap's Prometheus collectors. One Metrics value is built per agent on
// the registry the caller injects; every metric is prefixed podcap_, counters end in _total,
// and per-capture series carry only the namespace and pod of a running capture (bounded by
// --max-concurrent-captures) and are deleted when the capture ends.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Capture sources, the values of the "source" label.
const (
	SourceManual = "manual"
	SourcePolicy = "policy"
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
)

// Reasons of podcap_policy_errors_total.
const (
	PolicyErrorEval    = "eval"             // the policy could not be evaluated (or decoded) for a pod
	PolicyErrorInvalid = "invalid_decision" // a decision failed validation (filter, sizes, ...)
	PolicyErrorVeto    = "manual_veto"      // a manual request vetoed by data.podcap.manual_allowed
)

// Metrics are the agent's collectors.
type Metrics struct {
	CapturesRunning    *prometheus.GaugeVec   // source
	CapturesQueued     prometheus.Gauge       //
	CaptureStarts      *prometheus.CounterVec // source
	CaptureFailures    *prometheus.CounterVec // reason
	CaptureRestarts    prometheus.Counter     //
	InvalidRequests    *prometheus.CounterVec // reason
	Packets            *prometheus.CounterVec // namespace, pod
	Bytes              *prometheus.CounterVec // namespace, pod
	KernelDrops        *prometheus.CounterVec // namespace, pod
	FileRotations      *prometheus.CounterVec // namespace, pod
	SyncErrors         prometheus.Counter     //
	SyncDuration       prometheus.Histogram   //
	CaptureFileBytes   prometheus.Gauge       // bytes of ring files on disk, all captures
	RetentionEvictions *prometheus.CounterVec // reason
	PolicyEvaluations  *prometheus.CounterVec // result
	PolicyErrors       *prometheus.CounterVec // reason
}

// New builds the collectors and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	perCapture := []string{"namespace", "pod"}
	m := &Metrics{
		CapturesRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "podcap_captures_running",
			Help: "Captures whose capture process is running, by what started them.",
		}, []string{"source"}),
		CapturesQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "podcap_captures_queued",
			Help: "Captures waiting for a slot under --max-concurrent-captures.",
		}),
		CaptureStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_capture_starts_total",
			Help: "Captures started, by what started them.",
		}, []string{"source"}),
		CaptureFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_capture_failures_total",
			Help: "Capture attempts that failed or ended on their own, by reason.",
		}, []string{"reason"}),
		CaptureRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcap_capture_restarts_total",
			Help: "Capture processes restarted after they died or the pod's container changed.",
		}),
		InvalidRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_invalid_capture_requests_total",
			Help: "Capture requests refused because they were invalid, by reason.",
		}, []string{"reason"}),
		Packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_capture_packets_total",
			Help: "Packets written to the capture files of a running capture.",
		}, perCapture),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_capture_bytes_total",
			Help: "Bytes of packet data (captured length) written for a running capture.",
		}, perCapture),
		KernelDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_capture_kernel_drops_total",
			Help: "Packets the kernel dropped before the capture could read them (tcpdump's counter).",
		}, perCapture),
		FileRotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_capture_file_rotations_total",
			Help: "Ring file rotations of a running capture.",
		}, perCapture),
		SyncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcap_sync_errors_total",
			Help: "Pod syncs that failed and were retried.",
		}),
		SyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "podcap_sync_duration_seconds",
			Help:    "Time to sync one pod.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
		CaptureFileBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "podcap_capture_file_bytes",
			Help: "Bytes of capture files on disk under the capture directory.",
		}),
	}
	m.RetentionEvictions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podcap_retention_evictions_total",
		Help: "Finished capture directories removed by retention, by reason (age, budget).",
	}, []string{"reason"})
	m.PolicyEvaluations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podcap_policy_evaluations_total",
		Help: "Policy decisions for pods, by result (capture, no_capture, error, cached).",
	}, []string{"result"})
	m.PolicyErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podcap_policy_errors_total",
		Help: "Policy problems reported on pods, by reason (eval, invalid_decision, manual_veto).",
	}, []string{"reason"})
	for _, r := range []string{"capture", "no_capture", "error", "cached"} {
		m.PolicyEvaluations.WithLabelValues(r)
	}
	for _, r := range []string{PolicyErrorEval, PolicyErrorInvalid, PolicyErrorVeto} {
		m.PolicyErrors.WithLabelValues(r)
	}
	reg.MustRegister(m.RetentionEvictions, m.PolicyEvaluations, m.PolicyErrors)
	m.RetentionEvictions.WithLabelValues("age")
	m.RetentionEvictions.WithLabelValues("budget")
	reg.MustRegister(m.CapturesRunning, m.CapturesQueued, m.CaptureStarts, m.CaptureFailures,
		m.CaptureRestarts, m.InvalidRequests, m.Packets, m.Bytes, m.KernelDrops, m.FileRotations,
		m.SyncErrors, m.SyncDuration, m.CaptureFileBytes)
	// label values known up front are initialised so that rate() works from the first scrape
	for _, s := range []string{SourceManual, SourcePolicy} {
		m.CapturesRunning.WithLabelValues(s)
		m.CaptureStarts.WithLabelValues(s)
	}
	for _, r := range []string{FailureResolve, FailureStart, FailureExited, FailureFiles} {
		m.CaptureFailures.WithLabelValues(r)
	}
	for _, r := range []string{InvalidValue, InvalidHostNetwork, InvalidName} {
		m.InvalidRequests.WithLabelValues(r)
	}
	return m
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
