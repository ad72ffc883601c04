package alerts

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Reasons of podcap_alerts_refused_total.
const (
	RefusedMaxAlerts  = "max_alerts"  // the active alerts reached StoreOptions.MaxActive
	RefusedMaxObjects = "max_objects" // the CaptureAlert objects reached StoreOptions.MaxObjects
	RefusedInvalid    = "invalid"     // the API server refused the object (over the CRD's bounds)
)

// Operations of podcap_alert_store_errors_total.
const (
	opApply  = "apply"
	opGet    = "get"
	opDelete = "delete"
)

// storeMetrics are the Store's collectors.
type storeMetrics struct {
	recorded       *prometheus.CounterVec // status
	unchanged      prometheus.Counter
	refused        *prometheus.CounterVec // reason
	unknownEnded   prometheus.Counter
	deleted        prometheus.Counter
	invalidObjects prometheus.Counter
	errors         *prometheus.CounterVec // operation
	changes        prometheus.Counter
}

// newStoreMetrics registers the store's metrics on reg; active and objects are read at
// scrape time.
func newStoreMetrics(reg prometheus.Registerer, active, objects func() float64) (*storeMetrics, error) {
	m := &storeMetrics{
		recorded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_alerts_recorded_total",
			Help: "Alerts this agent recorded as CaptureAlert objects (created or updated), by the alert's status.",
		}, []string{"status"}),
		unchanged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcap_alerts_unchanged_total",
			Help: "Alerts this agent recorded without a write: their CaptureAlert object already held them and was written less than 30 s before (a retried notification).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_alerts_refused_total",
			Help: "Alerts this agent did not record, by reason: max_alerts (--max-alerts active alerts), max_objects (CaptureAlert objects awaiting deletion), invalid (refused by the API server's schema).",
		}, []string{"reason"}),
		unknownEnded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcap_alerts_unknown_ended_total",
			Help: "Resolved or ended alerts received without a CaptureAlert object; not recorded (nothing to end).",
		}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcap_alert_objects_deleted_total",
			Help: "CaptureAlert objects this agent deleted after their retention.",
		}),
		invalidObjects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcap_alert_objects_invalid_total",
			Help: "CaptureAlert objects the informer delivered that are not what podcap writes; ignored.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_alert_store_errors_total",
			Help: "Failed API requests on CaptureAlert objects, by operation (apply, get, delete).",
		}, []string{"operation"}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcap_alerts_active_changes_total",
			Help: "Times the set of active alerts changed (added, renewed with other fields, resolved, expired); each re-evaluates the node's pods.",
		}),
	}
	for _, s := range []string{StatusFiring, StatusResolved} {
		m.recorded.WithLabelValues(s)
	}
	for _, r := range []string{RefusedMaxAlerts, RefusedMaxObjects, RefusedInvalid} {
		m.refused.WithLabelValues(r)
	}
	for _, op := range []string{opApply, opGet, opDelete} {
		m.errors.WithLabelValues(op)
	}
	cs := []prometheus.Collector{
		m.recorded, m.unchanged, m.refused, m.unknownEnded, m.deleted, m.invalidObjects, m.errors, m.changes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podcap_alerts_active",
			Help: "Active alerts in this agent's CaptureAlert cache (firing, not ended, renewed within --alert-ttl).",
		}, active),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podcap_alert_objects",
			Help: "CaptureAlert objects in this agent's cache, active or awaiting deletion.",
		}, objects),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
