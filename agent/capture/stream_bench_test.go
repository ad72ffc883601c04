package capture

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// BenchmarkStreamTap is the cost of a live stream per packet: Pump's Tap (one copy into a
// pcap record, queued for each reader) and the readers' Next, with 0, 1 and 10 readers, for
// 1500-byte packets. The readers are drained in the benchmark's goroutine every 64 packets,
// so that none falls behind (a concurrent reader on a loaded machine would be cut off and
// the benchmark would measure fewer readers); cut reports readers cut off all the same.
func BenchmarkStreamTap(b *testing.B) {
	for _, readers := range []int{0, 1, 10} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			cfg := StreamConfig{MaxReaders: readers + 1, MaxReadersPerCapture: readers + 1, BufferPackets: 128}
			h := newHub(newStreamLimits(cfg))
			h.setFormat(layers.LinkTypeEthernet, 262144)
			subs := make([]*Subscription, readers)
			for i := range subs {
				s, err := h.subscribe()
				if err != nil {
					b.Fatal(err)
				}
				subs[i] = s
			}
			ctx := context.Background()
			data := make([]byte, 1500)
			ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: len(data), Length: len(data)}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				h.tap(ci, data)
				if n++; n%64 == 0 {
					drain(b, ctx, subs)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(readers-int(h.n.Load())), "cut")
			h.end()
		})
	}
}

func drain(b *testing.B, ctx context.Context, subs []*Subscription) {
	for _, s := range subs {
		for len(s.c) > 0 {
			if _, err := s.Next(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
}
