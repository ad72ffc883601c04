package capture

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// A write error (disk full, I/O error) stops the ring until the next SetFormat, which starts
// the next file: the capture restarted once the cause is gone writes again.
func TestRingRecoversFromAWriteErrorOnTheNextStream(t *testing.T) {
	dir := t.TempDir()
	r, err := NewRing(RingOptions{Dir: dir, Base: "capture-web.pcap", Files: 3, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: 60, Length: 60}
	data := make([]byte, 60)
	if err := r.SetFormat(layers.LinkTypeLinuxSLL2, 262144); err != nil {
		t.Fatal(err)
	}
	if err := r.WritePacket(ci, data); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	_ = r.f.Close() // the file goes bad under the ring: the next flush fails
	r.mu.Unlock()
	if err := r.Flush(); err == nil {
		t.Fatal("Flush after the file went bad: no error")
	}
	if err := r.WritePacket(ci, data); err == nil {
		t.Fatal("WritePacket after a write error: no error")
	}
	// the capture restarts: a new stream
	if err := r.SetFormat(layers.LinkTypeLinuxSLL2, 262144); err != nil {
		t.Fatalf("SetFormat after a write error: %v", err)
	}
	for range 2 {
		if err := r.WritePacket(ci, data); err != nil {
			t.Fatalf("WritePacket after recovering: %v", err)
		}
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "capture-web.pcap1"))
	if err != nil {
		t.Fatalf("the next file of the ring: %v", err)
	}
	defer f.Close()
	pr, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, _, err := pr.ReadPacketData(); err != nil {
			break
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d packets in capture-web.pcap1, want 2", n)
	}
}
