package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestStreamRows: part E's ratios are taken per round against the same engine's no-reader
// run of that round and load, then the median; cut readers are summed over the runs.
func TestStreamRows(t *testing.T) {
	v := func(x float64) *float64 { return &x }
	runs := []streamRun{
		{Round: 1, Load: "udp64", Config: "native", Variant: "none", Throughput: v(100), CapturedPPS: v(100), Captured: v(1000), CPUPct: v(10)},
		{Round: 1, Load: "udp64", Config: "native", Variant: "r10", Readers: 10, Throughput: v(80), CapturedPPS: v(80), Captured: v(800), CPUPct: v(40), StreamCut: v(2), ReaderPackets: v(4000)},
		{Round: 2, Load: "udp64", Config: "native", Variant: "none", Throughput: v(200), CapturedPPS: v(200), Captured: v(2000), CPUPct: v(10)},
		{Round: 2, Load: "udp64", Config: "native", Variant: "r10", Readers: 10, Throughput: v(180), CapturedPPS: v(180), Captured: v(1800), CPUPct: v(20), StreamCut: v(0), ReaderPackets: v(18000)},
		{Round: 1, Load: "udp64", Config: "pipeline", Variant: "none", Throughput: v(50), CapturedPPS: v(10), CPUPct: v(50)},
		{Round: 1, Load: "udp64", Config: "pipeline", Variant: "metrics", Throughput: v(50), CapturedPPS: v(5), CPUPct: v(50), Scrapes: v(100)},
	}
	rows := streamRows(runs)
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	var r10, metrics streamRow
	for _, r := range rows {
		switch r.Engine + "/" + r.Variant {
		case "native/r10":
			r10 = r
		case "pipeline/metrics":
			metrics = r
		}
	}
	// ratios 0.8 and 0.9: median 0.85; not 180/150
	if r10.TPRatio == nil || *r10.TPRatio < 0.849 || *r10.TPRatio > 0.851 {
		t.Errorf("r10 throughput ratio %v, want 0.85", r10.TPRatio)
	}
	if r10.Readers != 20 || r10.Cut != 2 {
		t.Errorf("r10 readers %d cut %d, want 20 and 2", r10.Readers, r10.Cut)
	}
	// delivered 4000/(800×10) = 0.5 and 18000/(1800×10) = 1
	if r10.Delivered == nil || *r10.Delivered != 0.75 {
		t.Errorf("r10 delivered %v, want 0.75", r10.Delivered)
	}
	if metrics.CapRatio == nil || *metrics.CapRatio != 0.5 {
		t.Errorf("metrics captured ratio %v, want 0.5", metrics.CapRatio)
	}
	var b bytes.Buffer
	writeStream(&b, rows, nil, nil)
	if !strings.Contains(b.String(), "| udp64 | native | 10 readers |") || !strings.Contains(b.String(), "2 of 20") {
		t.Errorf("table:\n%s", b.String())
	}
}
