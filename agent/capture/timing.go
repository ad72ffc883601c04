package capture

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/podcap/podcap/agent/metrics"
)

// timedResolver measures every lookup of the Resolver it wraps
// (podcap_cri_lookup_duration_seconds): a capture's start and each recheck of its container.
type timedResolver struct {
	next  Resolver
	clock clock.PassiveClock
	hist  *prometheus.HistogramVec // result
}

func (t timedResolver) Resolve(ctx context.Context, namespace, pod, uid string) (Target, error) {
	t0 := t.clock.Now()
	target, err := t.next.Resolve(ctx, namespace, pod, uid)
	result := metrics.LookupOK
	if err != nil {
		result = metrics.LookupError
	}
	t.hist.WithLabelValues(result).Observe(t.clock.Since(t0).Seconds())
	return target, err
}

// firstPacket returns Pump's FirstPacket for r: the first packet of the capture (not of a
// restarted process) observes the time since it was requested
// (podcap_capture_first_packet_seconds).
func (m *Manager) firstPacket(r *run) func() {
	return func() {
		if r.firstSeen.CompareAndSwap(false, true) {
			m.cfg.Metrics.FirstPacket.WithLabelValues(sourceLabel(r.spec)).Observe(m.cfg.Clock.Since(r.requested).Seconds())
		}
	}
}
