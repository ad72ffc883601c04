package capture_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/capturetest"
	"github.com/podcap/podcap/agent/metrics"
)

// streamFixture runs a manager whose captures are held sources the test pushes packets
// into, with the live stream bounds of sc.
func streamFixture(t *testing.T, sc capture.StreamConfig) (*fixture, *metrics.Streams) {
	t.Helper()
	f := newParts(t, nil)
	sc.Metrics = metrics.NewStreams(prometheus.NewRegistry())
	cfg := f.config(4)
	cfg.Streams = sc
	f.m = runManager(t, cfg)
	return f, sc.Metrics
}

// startStreamed starts a manual capture of pod and returns its source once it runs.
func startStreamed(t *testing.T, f *fixture, pod string, sources int) *capturetest.Source {
	t.Helper()
	f.res.Set("default", pod, capture.Target{PID: 40 + sources, SandboxID: "sb-" + pod})
	if _, err := f.m.Ensure(spec("default", pod, 2)); err != nil {
		t.Fatal(err)
	}
	eventually(t, pod+" running", func() bool { return phase(f.m, "default", pod) == capture.PhaseRunning })
	eventually(t, "source opened", func() bool { return len(f.engine.Sources()) >= sources })
	return f.engine.Sources()[sources-1]
}

// next reads one part of the stream, failing the test after 5 s.
func next(t *testing.T, s *capture.Subscription) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Next(ctx)
}

// readStream reads n parts (the header, then records) and returns their concatenation.
func readStream(t *testing.T, s *capture.Subscription, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	for i := range n {
		b, err := next(t, s)
		if err != nil {
			t.Fatalf("part %d of the stream: %v", i, err)
		}
		buf.Write(b)
	}
	return buf.Bytes()
}

func pushPackets(src *capturetest.Source, from, n int) {
	for i := from; i < from+n; i++ {
		ci, data := packet(100+i, int64(i))
		src.Push(capturetest.NewPacket(ci, data))
	}
}

func ringPackets(f *fixture, pod string) uint64 {
	st, _ := f.m.Status("default", pod)
	return st.Packets
}

// decodeStream decodes a pcap stream with gopacket's reader and returns its packets' sizes.
func decodeStream(t *testing.T, b []byte) (*pcapgo.Reader, []int) {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("stream header: %v", err)
	}
	var sizes []int
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			return r, sizes
		}
		if ci.CaptureLength != len(data) || data[0] != byte(len(data)) {
			t.Fatalf("record %d: %+v, data %d bytes of %d", len(sizes), ci, len(data), data[0])
		}
		sizes = append(sizes, len(data))
	}
}

// A reader joining a running capture gets a valid pcap stream: the capture's header, then
// the packets from then on.
func TestStreamJoinsMidCapture(t *testing.T) {
	f, _ := streamFixture(t, capture.StreamConfig{})
	src := startStreamed(t, f, "web", 1)
	pushPackets(src, 0, 3)
	eventually(t, "3 packets in the ring", func() bool { return ringPackets(f, "web") == 3 })
	sub, err := f.m.Subscribe("default", "web")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	pushPackets(src, 3, 2)
	r, sizes := decodeStream(t, readStream(t, sub, 3))
	if r.LinkType() != layers.LinkTypeLinuxSLL2 || r.Snaplen() != capture.DefaultSnaplen {
		t.Errorf("stream header: link type %v snaplen %d", r.LinkType(), r.Snaplen())
	}
	if fmt.Sprint(sizes) != "[103 104]" {
		t.Errorf("stream packets of %v bytes, want [103 104]", sizes)
	}
}

// A reader that does not read is cut off when its buffer is full; a reader that keeps up
// and the ring get every packet, and the capture never waits.
func TestStreamCutsSlowReader(t *testing.T) {
	f, sm := streamFixture(t, capture.StreamConfig{BufferPackets: 8})
	src := startStreamed(t, f, "web", 1)
	fast, err := f.m.Subscribe("default", "web")
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	slow, err := f.m.Subscribe("default", "web")
	if err != nil {
		t.Fatal(err)
	}
	var fastBytes []byte
	fastBytes = append(fastBytes, readStream(t, fast, 1)...) // the header
	for batch := range 5 {
		pushPackets(src, 4*batch, 4)
		fastBytes = append(fastBytes, readStream(t, fast, 4)...)
	}
	if _, sizes := decodeStream(t, fastBytes); len(sizes) != 20 {
		t.Errorf("fast reader got %d packets, want 20", len(sizes))
	}
	eventually(t, "20 packets in the ring", func() bool { return ringPackets(f, "web") == 20 })
	var slowParts int
	for {
		_, err := next(t, slow)
		if err != nil {
			if !errors.Is(err, capture.ErrStreamTooSlow) {
				t.Fatalf("slow reader ended with %v, want ErrStreamTooSlow", err)
			}
			break
		}
		slowParts++
	}
	if slowParts != 8 {
		t.Errorf("slow reader read %d parts before its end, want its buffer's 8", slowParts)
	}
	if got := testutil.ToFloat64(sm.Cut); got != 1 {
		t.Errorf("podcap_stream_readers_cut_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(sm.Readers); got != 1 {
		t.Errorf("podcap_stream_readers = %v, want 1 (the fast one)", got)
	}
}

// Readers are bounded per capture and per node; a reader that leaves frees its place.
func TestStreamReaderBounds(t *testing.T) {
	f, sm := streamFixture(t, capture.StreamConfig{MaxReaders: 3, MaxReadersPerCapture: 2})
	startStreamed(t, f, "a", 1)
	startStreamed(t, f, "b", 2)
	a1, err1 := f.m.Subscribe("default", "a")
	_, err2 := f.m.Subscribe("default", "a")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := f.m.Subscribe("default", "a"); !errors.Is(err, capture.ErrCaptureStreams) {
		t.Fatalf("third reader of a capture: %v, want ErrCaptureStreams", err)
	}
	if _, err := f.m.Subscribe("default", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Subscribe("default", "b"); !errors.Is(err, capture.ErrNodeStreams) {
		t.Fatalf("fourth reader of the node: %v, want ErrNodeStreams", err)
	}
	if got := testutil.ToFloat64(sm.Readers); got != 3 {
		t.Errorf("podcap_stream_readers = %v, want 3", got)
	}
	a1.Close()
	a1.Close() // twice is fine
	if _, err := f.m.Subscribe("default", "b"); err != nil {
		t.Fatalf("after a reader left: %v", err)
	}
	if _, err := f.m.Subscribe("default", "nope"); !errors.Is(err, capture.ErrCaptureNotRunning) {
		t.Fatalf("reader of no capture: %v, want ErrCaptureNotRunning", err)
	}
}

// A reader stays through a restart of the capture process (a new Pump, same ring) and ends
// with the capture.
func TestStreamOutlivesRestartEndsWithCapture(t *testing.T) {
	f, sm := streamFixture(t, capture.StreamConfig{})
	src := startStreamed(t, f, "web", 1)
	sub, err := f.m.Subscribe("default", "web")
	if err != nil {
		t.Fatal(err)
	}
	pushPackets(src, 0, 1)
	stream := readStream(t, sub, 2)
	src.Stop() // the process ends on its own: the manager starts another
	eventually(t, "capture restarted", func() bool { return len(f.engine.Sources()) == 2 })
	eventually(t, "capture running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	pushPackets(f.engine.Sources()[1], 1, 1)
	stream = append(stream, readStream(t, sub, 1)...)
	if _, sizes := decodeStream(t, stream); fmt.Sprint(sizes) != "[100 101]" {
		t.Errorf("packets across the restart: %v, want [100 101]", sizes)
	}
	f.m.Stop("default", "web")
	if _, err := next(t, sub); !errors.Is(err, capture.ErrStreamEnded) {
		t.Fatalf("after the capture stopped: %v, want ErrStreamEnded", err)
	}
	if got := testutil.ToFloat64(sm.Readers); got != 0 {
		t.Errorf("podcap_stream_readers = %v, want 0", got)
	}
	if _, err := f.m.Subscribe("default", "web"); !errors.Is(err, capture.ErrCaptureNotRunning) {
		t.Fatalf("reader of a stopped capture: %v", err)
	}
}
