package tcpdump_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/podcap/podcap/agent/capture"
)

// TestPipeline runs the whole capture path: tcpdump in a namespace → Pump → Ring files.
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
	src := open(t, e, ctx, capture.Target{PID: p.sleeperPID}, capture.SourceOptions{Filter: "icmp"})
	pumped := make(chan error, 1)
	go func() {
		_, err := capture.Pump(ctx, src, ring, capture.PumpOptions{})
		pumped <- err
	}()
	ping(t, p)
	waitFor(t, 10*time.Second, "4 packets in the ring", func() bool {
		return ring.Counts().Packets >= 4
	})
	cancel()
	if err := <-pumped; err != nil {
		t.Fatalf("Pump: %v", err)
	}
	if err := src.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	files := ring.Files()
	if len(files) != 1 || filepath.Base(files[0]) != "capture-pod.pcap0" {
		t.Fatalf("ring files %v", files)
	}
	f, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeLinuxSLL2 || r.Snaplen() != capture.DefaultSnaplen {
		t.Errorf("ring file header %v/%d", r.LinkType(), r.Snaplen())
	}
	var echoes int
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pkt := gopacket.NewPacket(data, layers.LinkTypeLinuxSLL2, gopacket.Default)
		if ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok && ip.SrcIP.Equal(p.BIP) && ip.DstIP.Equal(p.AIP) {
			echoes++
		}
	}
	if echoes == 0 {
		t.Errorf("no packet from %v to %v in %s", p.BIP, p.AIP, files[0])
	}
}
