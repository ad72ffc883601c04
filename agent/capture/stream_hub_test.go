package capture_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/podcap/podcap/agent/capture"
)

// TestStreamHub: the exported hub streams the header and the packets to its readers, holds
// them to MaxReaders, and ends them with End.
func TestStreamHub(t *testing.T) {
	h := capture.NewStreamHub(capture.StreamConfig{MaxReaders: 2, MaxReadersPerCapture: 2})
	h.SetFormat(layers.LinkTypeEthernet, 128)
	s, err := h.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Subscribe(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Subscribe(); !errors.Is(err, capture.ErrCaptureStreams) && !errors.Is(err, capture.ErrNodeStreams) {
		t.Fatalf("third reader: %v, want refused", err)
	}
	data := []byte{1, 2, 3, 4}
	h.Tap(gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: 4, Length: 4}, data)
	h.End()
	ctx := context.Background()
	hdr, err := s.Next(ctx)
	if err != nil || len(hdr) != 24 {
		t.Fatalf("header: %d bytes, %v", len(hdr), err)
	}
	rec, err := s.Next(ctx)
	if err != nil || len(rec) != 16+len(data) {
		t.Fatalf("record: %d bytes, %v", len(rec), err)
	}
	if _, err := s.Next(ctx); !errors.Is(err, capture.ErrStreamEnded) {
		t.Fatalf("after End: %v, want ErrStreamEnded", err)
	}
}
