package alerts

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// webhookCodes are the codes the webhook answers with (499: the client went away), the
// pre-initialised values of podcap_webhook_requests_total's label.
var webhookCodes = []int{
	http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden,
	http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge,
	http.StatusUnsupportedMediaType, clientGone, http.StatusServiceUnavailable,
}

type webhookMetrics struct {
	requests *prometheus.CounterVec // code
	duration prometheus.Histogram
	alerts   *prometheus.CounterVec // status
}

func newWebhookMetrics(reg prometheus.Registerer) (webhookMetrics, error) {
	m := webhookMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_webhook_requests_total",
			Help: "Alertmanager webhook requests, by the HTTP code answered (499: the client went away before the body was read).",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "podcap_webhook_request_duration_seconds",
			Help:    "Time from an Alertmanager webhook request to its answer, recording the alerts included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_alerts_received_total",
			Help: "Alerts in the webhook notifications that decoded, by the alert's own status (a notification retried after a 503 counts again).",
		}, []string{"status"}),
	}
	for _, c := range webhookCodes {
		m.requests.WithLabelValues(strconv.Itoa(c))
	}
	m.alerts.WithLabelValues(StatusFiring)
	m.alerts.WithLabelValues(StatusResolved)
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.alerts} {
		if err := reg.Register(c); err != nil {
			return webhookMetrics{}, fmt.Errorf("register webhook metrics: %w", err)
		}
	}
	return m, nil
}

// Log rate limit of refused requests: a storm of bad requests logs at most logBurst entries
// per logWindow, and the first entry of the next window says how many were left out.
const (
	logWindow = 10 * time.Second
	logBurst  = 5
)

// logLimiter decides which refusals are logged.
type logLimiter struct {
	now func() time.Time

	// mu protects the fields below.
	mu      sync.Mutex
	start   time.Time // of the current window
	logged  int       // in the current window
	leftOut int       // since the last entry logged
}

func newLogLimiter(now func() time.Time) *logLimiter { return &logLimiter{now: now} }

// allow reports whether to log one more entry, and how many were left out since the last.
func (l *logLimiter) allow() (leftOut int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := l.now(); now.Sub(l.start) >= logWindow {
		l.start, l.logged = now, 0
	}
	if l.logged >= logBurst {
		l.leftOut++
		return 0, false
	}
	l.logged++
	leftOut, l.leftOut = l.leftOut, 0
	return leftOut, true
}

// RequestsCounter is podcap_webhook_requests_total{code}, for tests.
func (w *Webhook) RequestsCounter(code int) prometheus.Counter {
	return w.m.requests.WithLabelValues(strconv.Itoa(code))
}
