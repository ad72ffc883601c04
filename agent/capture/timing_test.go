package capture_test

import (
	"errors"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/capturetest"
	"github.com/podcap/podcap/agent/metrics"
)

// samples is how many observations a histogram series holds.
func samples(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// A capture observes podcap_capture_first_packet_seconds once, even when its process ends
// and restarts (each restart writes a first packet again); every pod lookup is timed, by
// result; the budget and the capture's reservation are gauges; the per-capture counters start
// at 0.
func TestTimingAndBudgetMetrics(t *testing.T) {
	f := newFixture(t, 4, func(capture.Target, capture.SourceOptions) *capturetest.Source {
		return capturetest.NewSource(layers.LinkTypeLinuxSLL2, 262144, pkt(100), pkt(200)) // ends: restarted
	})
	if got := testutil.ToFloat64(f.metrics.BudgetBytes); got != 64<<20 {
		t.Errorf("podcap_capture_budget_bytes = %v, want %d (Retention.MaxBytes)", got, 64<<20)
	}
	f.res.SetErr("default", "web", errors.New("runtime down"))
	ensure(t, f.m, spec("default", "web", 2))
	eventually(t, "a failed lookup timed", func() bool {
		return samples(t, f.metrics.CRILookupDuration.WithLabelValues(metrics.LookupError)) >= 1
	})
	// the capture holds a slot: its per-capture series exist at 0 before anything happened,
	// so that rate() sees their first increment
	for name, c := range map[string]*prometheus.CounterVec{"kernel drops": f.metrics.KernelDrops, "packets": f.metrics.Packets} {
		if n := testutil.CollectAndCount(c); n != 1 {
			t.Errorf("%s: %d series before the capture's first packet, want 1 (at 0)", name, n)
		}
	}
	want := float64(capture.WorstCaseBytes(2, capture.DefaultFileSize, capture.DefaultSnaplen))
	if got := testutil.ToFloat64(f.metrics.ReservedBytes); got != want {
		t.Errorf("podcap_capture_reserved_bytes = %v while the capture holds its slot, want its worst case %v", got, want)
	}
	f.res.Set("default", "web", capture.Target{PID: 42})
	eventually(t, "the capture process started three times", func() bool { return len(f.engine.Opens()) >= 3 })
	if n := samples(t, f.metrics.FirstPacket.WithLabelValues("manual")); n != 1 {
		t.Errorf("podcap_capture_first_packet_seconds{source=manual} has %d samples after %d starts, want 1", n, len(f.engine.Opens()))
	}
	ok, failed := samples(t, f.metrics.CRILookupDuration.WithLabelValues(metrics.LookupOK)), samples(t, f.metrics.CRILookupDuration.WithLabelValues(metrics.LookupError))
	if calls := f.res.Calls(); ok < 3 || int(ok+failed) > calls {
		t.Errorf("lookups timed: %d ok + %d error, resolver called %d times with at least 3 successes", ok, failed, calls)
	}
	f.m.Stop("default", "web")
	eventually(t, "the reservation released", func() bool { return testutil.ToFloat64(f.metrics.ReservedBytes) == 0 })
}
