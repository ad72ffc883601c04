// Package metrics holds podcap's Prometheus collectors. One Metrics value is built per agent on
// the registry the caller injects; every metric is prefixed podcap_, counters end in _total,
// and per-capture series carry only the namespace and pod of a running capture (bounded by
// --max-concurrent-captures) and are deleted when the capture ends.
package metrics

import (
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
	reg.MustRegister(m.RetentionEvictions)
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
