package capture_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/capturetest"
)

func fakePackets(sizes ...int) []capturetest.Packet {
	var out []capturetest.Packet
	for i, n := range sizes {
		ci, data := packet(n, int64(i))
		out = append(out, capturetest.NewPacket(ci, data))
	}
	return out
}

func TestPumpCopiesUntilEOF(t *testing.T) {
	r := newRing(t, capture.RingOptions{Files: 2, FlushInterval: time.Hour})
	src := capturetest.NewSource(layers.LinkTypeLinuxSLL2, 128, fakePackets(10, 20, 30)...)
	var tapped []int
	st, err := capture.Pump(context.Background(), src, r, capture.PumpOptions{
		Tap: func(_ gopacket.CaptureInfo, data []byte) { tapped = append(tapped, len(data)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if st != (capture.PumpStats{Packets: 3, Bytes: 60}) {
		t.Errorf("PumpStats = %+v", st)
	}
	if !slices.Equal(tapped, []int{10, 20, 30}) {
		t.Errorf("tapped %v", tapped)
	}
	// Pump flushed: the file is complete although the ring's timer would wait an hour.
	var sizes []int
	for _, p := range readPcap(t, filepath.Join(r.Dir(), "r.pcap0")) {
		sizes = append(sizes, len(p))
	}
	if !slices.Equal(sizes, []int{10, 20, 30}) {
		t.Errorf("ring holds packets of %v bytes", sizes)
	}
}

// A cancelled context stops the source (gracefully) instead of closing it.
func TestPumpStopsWithContext(t *testing.T) {
	r := newRing(t, capture.RingOptions{Files: 2})
	src := capturetest.NewSource(layers.LinkTypeEthernet, 65535, fakePackets(10)...).Hold()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := capture.Pump(ctx, src, r, capture.PumpOptions{})
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for src.Read() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("Pump read no packet")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Pump after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pump did not return after its context was cancelled")
	}
	if !src.Stopped() || src.Closed() {
		t.Errorf("source stopped %v, closed %v; want stopped, and closing left to the caller", src.Stopped(), src.Closed())
	}
}

// After its context is done Pump goes on writing what the stopped source still returns,
// until the source ends: the last packets of a capture are not thrown away.
func TestPumpWritesWhatTheStoppedSourceHolds(t *testing.T) {
	r := newRing(t, capture.RingOptions{Files: 2, FlushInterval: time.Hour})
	src := capturetest.NewSource(layers.LinkTypeEthernet, 65535, fakePackets(10, 20, 30, 40)...).Hold()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // done before Pump read anything
	var tapped int
	st, err := capture.Pump(ctx, src, r, capture.PumpOptions{Tap: func(gopacket.CaptureInfo, []byte) { tapped++ }})
	if err != nil {
		t.Fatal(err)
	}
	if st != (capture.PumpStats{Packets: 4, Bytes: 100}) || tapped != 4 {
		t.Errorf("PumpStats = %+v, tapped %d; want all 4 packets", st, tapped)
	}
	// The held source ended only because Pump stopped it, and Pump did not close it.
	if !src.Stopped() || src.Closed() {
		t.Errorf("source stopped %v, closed %v; want stopped only", src.Stopped(), src.Closed())
	}
	if n := len(readPcap(t, filepath.Join(r.Dir(), "r.pcap0"))); n != 4 {
		t.Errorf("ring holds %d packets, want 4", n)
	}
}

// A source that does not end when stopped is closed StopTimeout later, which ends a
// ReadPacket blocked in it: Pump returns and says it gave up.
func TestPumpGivesUpAfterStopTimeout(t *testing.T) {
	r := newRing(t, capture.RingOptions{Files: 2})
	src := capturetest.NewSource(layers.LinkTypeEthernet, 65535, fakePackets(10, 20)...).Hold().IgnoreStop()
	clk := testingclock.NewFakeClock(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		st  capture.PumpStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := capture.Pump(ctx, src, r, capture.PumpOptions{StopTimeout: time.Minute, Clock: clk})
		done <- result{st, err}
	}()
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for !src.Stopped() || !clk.HasWaiters() || src.Read() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("Pump did not stop the source and wait (stopped %v, timer %v, read %d)", src.Stopped(), clk.HasWaiters(), src.Read())
		}
		time.Sleep(time.Millisecond)
	}
	clk.Step(time.Minute - time.Nanosecond)
	select {
	case res := <-done:
		t.Fatalf("Pump returned before its stop timeout: %+v", res)
	default:
	}
	clk.Step(time.Nanosecond)
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("Pump: %v", res.err)
		}
		if res.st != (capture.PumpStats{Packets: 2, Bytes: 30, StopTimedOut: true}) {
			t.Errorf("PumpStats = %+v, want the 2 packets and StopTimedOut", res.st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pump did not return after its stop timeout")
	}
	if !src.Closed() {
		t.Error("Pump did not close the source it gave up on")
	}
}

func TestPumpErrors(t *testing.T) {
	boom := errors.New("boom")
	t.Run("read", func(t *testing.T) {
		r := newRing(t, capture.RingOptions{Files: 2})
		src := capturetest.NewSource(layers.LinkTypeEthernet, 65535, fakePackets(10)...).EndWith(boom, nil)
		st, err := capture.Pump(context.Background(), src, r, capture.PumpOptions{})
		if !errors.Is(err, boom) || st.Packets != 1 {
			t.Fatalf("Pump = %+v, %v; want 1 packet and boom", st, err)
		}
	})
	t.Run("ring", func(t *testing.T) {
		r := newRing(t, capture.RingOptions{Files: 2})
		r.Close()
		src := capturetest.NewSource(layers.LinkTypeEthernet, 65535, fakePackets(10)...)
		if _, err := capture.Pump(context.Background(), src, r, capture.PumpOptions{}); !errors.Is(err, capture.ErrRingClosed) {
			t.Fatalf("Pump into a closed ring: %v", err)
		}
	})
}

func TestPumpNewSourceContinuesRing(t *testing.T) {
	r := newRing(t, capture.RingOptions{Files: 3})
	for _, lt := range []layers.LinkType{layers.LinkTypeLinuxSLL2, layers.LinkTypeLinuxSLL2, layers.LinkTypeEthernet} {
		src := capturetest.NewSource(lt, 262144, fakePackets(10)...)
		if _, err := capture.Pump(context.Background(), src, r, capture.PumpOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The restarted source of the same format continued pcap0; the new format began pcap1.
	if got := names(r.Files()); !slices.Equal(got, []string{"r.pcap0", "r.pcap1"}) {
		t.Fatalf("files %v", got)
	}
	if n := len(readPcap(t, filepath.Join(r.Dir(), "r.pcap0"))); n != 2 {
		t.Errorf("r.pcap0 holds %d packets, want 2", n)
	}
}
