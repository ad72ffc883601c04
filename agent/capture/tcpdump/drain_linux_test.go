package tcpdump_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/podcap/podcap/agent/capture"
)

// TestStopKeepsEveryCapturedPacket stops a capture right after a known burst while Pump is
// still behind (its Tap holds it on the burst's first packet until tcpdump has exited): the
// rest of the burst is then only in the pipe. Every packet tcpdump reports captured must
// be in the ring, and that must be the whole burst.
func TestStopKeepsEveryCapturedPacket(t *testing.T) {
	needRoot(t)
	const burst = 200
	e := newEngine(t)
	p := newNetnsPair(t)
	ring, err := capture.NewRing(capture.RingOptions{Dir: t.TempDir(), Base: "capture-pod.pcap", Files: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Only the burst: echo requests from B. Snaplen 128 gives tcpdump's kernel ring
	// thousands of slots, so the burst is not dropped there.
	filter := fmt.Sprintf("icmp[icmptype] == icmp-echo and src host %s", p.BIP)
	src := open(t, e, ctx, capture.Target{PID: p.sleeperPID}, capture.SourceOptions{Snaplen: 128, Filter: filter})

	held, release := make(chan struct{}), make(chan struct{})
	first := true
	tap := func(gopacket.CaptureInfo, []byte) {
		if first {
			first = false
			close(held)
			<-release
		}
	}
	type pumpResult struct {
		st  capture.PumpStats
		err error
	}
	pumped := make(chan pumpResult, 1)
	go func() {
		st, err := capture.Pump(ctx, src, ring, capture.PumpOptions{Tap: tap})
		pumped <- pumpResult{st, err}
	}()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	const echoID = 0x5043
	sendEchoBurst(t, p, echoID, burst)
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("Pump got no packet of the burst")
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("tcpdump to report %d packets captured", burst), func() bool {
		src.RequestStats()
		return src.Stats().Captured >= burst
	})
	cancel() // stop the capture: the burst but its first packet is still in the pipe
	waitFor(t, 10*time.Second, "tcpdump to exit", func() bool {
		st := processState(src.PID())
		return st == "" || st == "Z"
	})
	released = true
	close(release)
	var res pumpResult
	select {
	case res = <-pumped:
	case <-time.After(10 * time.Second):
		t.Fatal("Pump did not return after the capture was stopped")
	}
	if res.err != nil {
		t.Fatalf("Pump: %v", res.err)
	}
	if err := src.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	final := src.Stats()
	if err := ring.Flush(); err != nil {
		t.Fatal(err)
	}

	seqs := ringEchoSeqs(t, ring, p, echoID)
	t.Logf("tcpdump's final counters %+v; Pump wrote %d packets; the ring holds %d echo requests of the burst", final, res.st.Packets, len(seqs))
	if final.Captured < burst {
		t.Errorf("tcpdump reports %d packets captured, want the whole burst of %d", final.Captured, burst)
	}
	if res.st.Packets != final.Captured {
		t.Errorf("Pump wrote %d packets, tcpdump reports %d captured", res.st.Packets, final.Captured)
	}
	var missing, repeated []uint16
	for seq := uint16(1); seq <= burst; seq++ {
		switch seqs[seq] {
		case 0:
			missing = append(missing, seq)
		case 1:
		default:
			repeated = append(repeated, seq)
		}
	}
	if len(missing) > 0 || len(repeated) > 0 {
		t.Errorf("the ring lacks %d echo requests of the burst %v and holds %v more than once", len(missing), missing, repeated)
	}
}

// sendEchoBurst sends n ICMP echo requests (id, seq 1..n) from B to A as fast as it can.
func sendEchoBurst(t *testing.T, p *netnsPair, id uint16, n int) {
	t.Helper()
	conn := icmpConnIn(t, p.BPath())
	for seq := 1; seq <= n; seq++ {
		msg := &layers.ICMPv4{
			TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0),
			Id:       id,
			Seq:      uint16(seq),
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, msg, gopacket.Payload("podcap-burst")); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteTo(buf.Bytes(), &net.IPAddr{IP: p.AIP}); err != nil {
			t.Fatalf("send echo request %d: %v", seq, err)
		}
	}
}

// ringEchoSeqs reads the ring's files back and counts, by sequence number, the echo
// requests with id from B to A. Any other packet fails the test (the filter excludes them).
func ringEchoSeqs(t *testing.T, ring *capture.Ring, p *netnsPair, id uint16) map[uint16]int {
	t.Helper()
	seqs := map[uint16]int{}
	for _, name := range ring.Files() {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r, err := pcapgo.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for {
			data, _, err := r.ReadPacketData()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
			ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if ip == nil || icmp == nil || !ip.SrcIP.Equal(p.BIP) || !ip.DstIP.Equal(p.AIP) ||
				icmp.TypeCode.Type() != layers.ICMPv4TypeEchoRequest || icmp.Id != id {
				t.Errorf("%s: a packet that is not one of the burst: %v", name, pkt)
				continue
			}
			seqs[icmp.Seq]++
		}
	}
	return seqs
}
