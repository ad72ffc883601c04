package metrics

import "github.com/prometheus/client_golang/prometheus"

// Streams are the live-stream collectors (GET /api/v1/captures/{namespace}/{pod}/stream).
type Streams struct {
	Readers prometheus.Gauge   // podcap_stream_readers
	Cut     prometheus.Counter // podcap_stream_readers_cut_total
}

// NewStreams builds the live-stream collectors and registers them on reg (nil: unregistered,
// for tests).
func NewStreams(reg prometheus.Registerer) *Streams {
	s := &Streams{
		Readers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "podcap_stream_readers",
			Help: "Live pcap stream readers connected to this agent, bounded by --max-stream-readers."}),
		Cut: prometheus.NewCounter(prometheus.CounterOpts{Name: "podcap_stream_readers_cut_total",
			Help: "Live pcap stream readers cut off because they fell behind by more than their buffer (--stream-buffer-bytes); the capture and its files lose nothing."}),
	}
	if reg != nil {
		reg.MustRegister(s.Readers, s.Cut)
	}
	return s
}
