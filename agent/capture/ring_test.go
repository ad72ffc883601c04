package capture_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/podcap/podcap/agent/capture"
)

func TestRingFileName(t *testing.T) {
	for _, tc := range []struct {
		files, index int
		want         string
	}{
		{1, 0, "b"},
		{3, 0, "b0"}, {3, 2, "b2"},
		{10, 9, "b9"},
		{11, 0, "b00"}, {11, 10, "b10"},
		{12, 0, "b00"}, {12, 11, "b11"},
		{101, 7, "b007"},
		{0, 0, "b"}, {0, 1, "b1"}, {0, 12, "b12"}, // no -W
	} {
		if got := capture.RingFileName("b", tc.files, tc.index); got != tc.want {
			t.Errorf("RingFileName(b, %d, %d) = %q, want %q", tc.files, tc.index, got, tc.want)
		}
	}
}

func TestValidateRingBase(t *testing.T) {
	long := string(bytes.Repeat([]byte("x"), 254))
	for _, tc := range []struct {
		base  string
		files int
		ok    bool
	}{
		{"capture-pod.pcap", 3, true},
		{".hidden.pcap", 3, true},
		{"", 3, false},
		{".", 1, false},
		{"..", 1, false},
		{"a/b", 3, false},
		{"/abs", 3, false},
		{"../up", 3, false},
		{"nul\x00", 3, false},
		{long, 1, true},   // 254 bytes
		{long, 10, true},  // 254 + 1 digit
		{long, 11, false}, // 254 + 2 digits
		{long + "x", 1, true},
		{long + "xx", 1, false},
	} {
		if err := capture.ValidateRingBase(tc.base, tc.files); (err == nil) != tc.ok {
			t.Errorf("ValidateRingBase(%q, %d) = %v, want ok=%v", tc.base, tc.files, err, tc.ok)
		}
	}
	if _, err := capture.NewRing(capture.RingOptions{Dir: t.TempDir(), Base: "../x", Files: 3}); err == nil {
		t.Error("NewRing accepted base ../x")
	}
	if _, err := capture.NewRing(capture.RingOptions{Dir: t.TempDir(), Base: "x", Files: 0}); err == nil {
		t.Error("NewRing accepted 0 files")
	}
}

// packet returns a capture info and data of n bytes.
func packet(n int, sec int64) (gopacket.CaptureInfo, []byte) {
	data := bytes.Repeat([]byte{byte(n)}, n)
	return gopacket.CaptureInfo{Timestamp: time.Unix(sec, 123456000), CaptureLength: n, Length: n + 10}, data
}

func newRing(t *testing.T, o capture.RingOptions) *capture.Ring {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Base == "" {
		o.Base = "r.pcap"
	}
	r, err := capture.NewRing(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func write(t *testing.T, r *capture.Ring, sizes ...int) {
	t.Helper()
	for i, n := range sizes {
		ci, data := packet(n, int64(i))
		if err := r.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
}

func names(paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, filepath.Base(p))
	}
	return out
}

func TestRingRotationBoundary(t *testing.T) {
	// One 100-byte packet makes a file of 24 + 16 + 100 = 140 bytes.
	for _, tc := range []struct {
		name     string
		fileSize int64
		want     []string
	}{
		{"exactly at limit: no rotation", 140, []string{"r.pcap0"}},
		{"one byte over: rotation", 139, []string{"r.pcap0", "r.pcap1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, capture.RingOptions{Files: 3, FileSize: tc.fileSize})
			if err := r.SetFormat(layers.LinkTypeEthernet, 65535); err != nil {
				t.Fatal(err)
			}
			write(t, r, 100)
			if got := names(r.Files()); !slices.Equal(got, []string{"r.pcap0"}) {
				t.Fatalf("after one packet: %v", got)
			}
			write(t, r, 1)
			if got := names(r.Files()); !slices.Equal(got, tc.want) {
				t.Fatalf("files = %v, want %v", got, tc.want)
			}
			if rot := r.Counts().Rotations; rot != uint64(len(tc.want)-1) {
				t.Errorf("rotations = %d, want %d", rot, len(tc.want)-1)
			}
		})
	}
}

func TestRingWrapsOldestFirst(t *testing.T) {
	r := newRing(t, capture.RingOptions{Files: 3, FileSize: 24})
	if err := r.SetFormat(layers.LinkTypeEthernet, 65535); err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]string{
		{"r.pcap0"},
		{"r.pcap0", "r.pcap1"},
		{"r.pcap0", "r.pcap1", "r.pcap2"},
		{"r.pcap1", "r.pcap2", "r.pcap0"},
		{"r.pcap2", "r.pcap0", "r.pcap1"},
	} {
		write(t, r, 10+i)
		if got := names(r.Files()); !slices.Equal(got, want) {
			t.Fatalf("after packet %d: files %v, want %v", i, got, want)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Each file holds one packet: the newest three of the five.
	for i, p := range r.Files() {
		pkts := readPcap(t, p)
		if len(pkts) != 1 || len(pkts[0]) != 12+i {
			t.Errorf("%s holds %d packets (first %d bytes), want one of %d", p, len(pkts), len(pkts[0]), 12+i)
		}
	}
	want := capture.RingCounts{Packets: 5, Bytes: 10 + 11 + 12 + 13 + 14, FileBytes: 5*24 + 5*16 + (10 + 11 + 12 + 13 + 14), Rotations: 4}
	if c := r.Counts(); c != want {
		t.Errorf("Counts() = %+v, want %+v", c, want)
	}
	// what is on disk: the three files left, each a header and one record
	if got, want := r.DiskBytes(), int64(3*24+3*16+(12+13+14)); got != want {
		t.Errorf("DiskBytes() = %d, want %d", got, want)
	}
}

func TestRingFormatChange(t *testing.T) {
	r := newRing(t, capture.RingOptions{Files: 3})
	if err := r.WritePacket(packet(10, 1)); !errors.Is(err, capture.ErrNoFormat) {
		t.Fatalf("WritePacket before SetFormat: %v, want ErrNoFormat", err)
	}
	step := func(lt layers.LinkType, snaplen uint32, want []string) {
		t.Helper()
		if err := r.SetFormat(lt, snaplen); err != nil {
			t.Fatal(err)
		}
		if got := names(r.Files()); !slices.Equal(got, want) {
			t.Fatalf("SetFormat(%v, %d): files %v, want %v", lt, snaplen, got, want)
		}
	}
	step(layers.LinkTypeEthernet, 65535, []string{"r.pcap0"})
	write(t, r, 10)
	step(layers.LinkTypeEthernet, 65535, []string{"r.pcap0"}) // same format: continue
	write(t, r, 11)
	step(layers.LinkTypeLinuxSLL2, 262144, []string{"r.pcap0", "r.pcap1"}) // new format: next file
	step(layers.LinkTypeEthernet, 96, []string{"r.pcap0", "r.pcap1"})      // no packet yet: rewritten
	write(t, r, 12)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file    string
		lt      layers.LinkType
		snaplen uint32
		sizes   []int
	}{
		{"r.pcap0", layers.LinkTypeEthernet, 65535, []int{10, 11}},
		{"r.pcap1", layers.LinkTypeEthernet, 96, []int{12}},
	} {
		pr := openPcap(t, filepath.Join(r.Dir(), tc.file))
		if pr.LinkType() != tc.lt || pr.Snaplen() != tc.snaplen {
			t.Errorf("%s: header %v/%d, want %v/%d", tc.file, pr.LinkType(), pr.Snaplen(), tc.lt, tc.snaplen)
		}
		var sizes []int
		for _, p := range readPcap(t, filepath.Join(r.Dir(), tc.file)) {
			sizes = append(sizes, len(p))
		}
		if !slices.Equal(sizes, tc.sizes) {
			t.Errorf("%s: packets of %v bytes, want %v", tc.file, sizes, tc.sizes)
		}
	}
}

// TestRingRotationUnlinks checks that a file is replaced by a new inode, not truncated: a
// reader holding the old file keeps all of its data.
func TestRingRotationUnlinks(t *testing.T) {
	r := newRing(t, capture.RingOptions{Files: 1, FileSize: 24})
	if err := r.SetFormat(layers.LinkTypeEthernet, 65535); err != nil {
		t.Fatal(err)
	}
	write(t, r, 100)
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(r.Dir(), "r.pcap")
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldInfo, _ := old.Stat()

	write(t, r, 50) // rotates: the one file is replaced
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	newInfo, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(oldInfo, newInfo) {
		t.Fatal("rotation reused the file's inode (truncated in place)")
	}
	if fi, _ := old.Stat(); fi.Size() != 24+16+100 {
		t.Errorf("old file has %d bytes after rotation, want %d: it was truncated", fi.Size(), 24+16+100)
	}
	if newInfo.Size() != 24+16+50 {
		t.Errorf("new file has %d bytes, want %d", newInfo.Size(), 24+16+50)
	}
	if perm := newInfo.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("ring file mode %v: readable by others", perm)
	}
}

func TestRingCloseFlushes(t *testing.T) {
	r := newRing(t, capture.RingOptions{Files: 2, FlushInterval: time.Hour})
	if err := r.SetFormat(layers.LinkTypeEthernet, 65535); err != nil {
		t.Fatal(err)
	}
	write(t, r, 100)
	path := filepath.Join(r.Dir(), "r.pcap0")
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("before Close: %v, %v; want an empty file (data buffered)", fi, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 24+16+100 {
		t.Fatalf("after Close: %v, %v; want %d bytes", fi, err, 24+16+100)
	}
	if err := r.WritePacket(packet(1, 1)); !errors.Is(err, capture.ErrRingClosed) {
		t.Errorf("WritePacket after Close: %v, want ErrRingClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// The flush timer runs on the ring's clock: nothing reaches the file before the interval
// passed, and everything within it once it did.
func TestRingTimedFlush(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC))
	r := newRing(t, capture.RingOptions{Files: 2, FlushInterval: 20 * time.Millisecond, Clock: clk})
	if err := r.SetFormat(layers.LinkTypeEthernet, 65535); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(r.Dir(), "r.pcap0")
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	for i, want := range []int64{24 + 16 + 100, 24 + 16 + 100 + 16 + 7} {
		before := size()
		write(t, r, []int{100, 7}[i])
		clk.Step(19 * time.Millisecond) // the timer is armed by the first buffered byte
		if got := size(); got != before {
			t.Fatalf("flushed %d bytes before the interval passed", got-before)
		}
		clk.Step(time.Millisecond)
		deadline := time.Now().Add(5 * time.Second)
		for size() != want {
			if time.Now().After(deadline) {
				t.Fatalf("file not flushed by the timer: %d bytes, want %d", size(), want)
			}
			time.Sleep(time.Millisecond) // the timer's flush runs in its own goroutine
		}
	}
}

func TestRingStart(t *testing.T) {
	r := newRing(t, capture.RingOptions{Files: 3, FileSize: 24, Start: 2})
	if err := r.SetFormat(layers.LinkTypeEthernet, 65535); err != nil {
		t.Fatal(err)
	}
	write(t, r, 1, 2)
	if got := names(r.Files()); !slices.Equal(got, []string{"r.pcap2", "r.pcap0"}) {
		t.Fatalf("files %v", got)
	}
	if got, want := r.Pattern(), filepath.Join(r.Dir(), "r.pcap")+"{0..2}"; got != want {
		t.Errorf("Pattern() = %q, want %q", got, want)
	}
}

// openPcap opens a pcap file for reading; it is closed when the test ends.
func openPcap(t *testing.T, path string) *pcapgo.Reader {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func readPcap(t *testing.T, path string) [][]byte {
	t.Helper()
	r := openPcap(t, path)
	var out [][]byte
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
}

func BenchmarkRingWritePacket(b *testing.B) {
	for _, size := range []int{64, 1500, 65535} {
		b.Run(sizeName(size), func(b *testing.B) {
			r, err := capture.NewRing(capture.RingOptions{Dir: b.TempDir(), Base: "b.pcap", Files: 4})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			if err := r.SetFormat(layers.LinkTypeEthernet, 262144); err != nil {
				b.Fatal(err)
			}
			ci, data := packet(size, 1)
			b.SetBytes(int64(size + 16))
			b.ReportAllocs()
			for b.Loop() {
				if err := r.WritePacket(ci, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func sizeName(n int) string {
	return map[int]string{64: "64B", 1500: "1500B", 65535: "64KiB"}[n]
}
