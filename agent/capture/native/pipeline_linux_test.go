package native_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/podcap/podcap/agent/capture"
)

// TestPipeline runs the agent's capture path over the native engine: Open → Pump → Ring
// files, which tcpdump itself then reads as LINUX_SLL2 captures of the traffic.
func TestPipeline(t *testing.T) {
	needRoot(t)
	e := newEngine(t)
	p := newNetnsPair(t)
	ring, err := capture.OpenRing(t.TempDir(), "capture-pod.pcap", 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := open(t, e, ctx, p.APath(), capture.SourceOptions{Filter: "udp"})
	pumped := make(chan error, 1)
	go func() {
		_, err := capture.Pump(ctx, src, ring, capture.PumpOptions{})
		pumped <- err
	}()
	sendTraffic(t, p, 50)
	waitFor(t, 10*time.Second, "the datagrams in the ring", func() bool { return ring.Counts().Packets >= 50 })
	cancel()
	if err := <-pumped; err != nil {
		t.Fatalf("Pump: %v", err)
	}
	if err := src.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	files := ring.Files()
	if len(files) != 1 {
		t.Fatalf("ring files %v", files)
	}
	out, err := exec.Command("tcpdump", "-n", "-r", files[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v: %s", err, out)
	}
	text := string(out)
	if !strings.Contains(text, "LINUX_SLL2") || strings.Count(text, p.BIP.String()+".") < 50 {
		t.Errorf("tcpdump -r %s:\n%.2000s", files[0], text)
	}
	t.Logf("tcpdump -r read %d lines", strings.Count(text, "\n"))
}
