package capture_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/podcap/podcap/agent/capture"
)

var testSection = capture.SectionInfo{
	Comments: []string{"rule: alert HighTCPRetransmits", "pod shop/cart-1", "podcap-agent dev"},
	Hardware: "amd64", OS: "linux", UserAppl: "podcap",
}

func newNgRing(t *testing.T, files int, fileSize int64) *capture.Ring {
	t.Helper()
	r := newRing(t, capture.RingOptions{Base: "r.pcapng", Files: files, FileSize: fileSize, Format: capture.FormatPcapng, Section: testSection})
	if err := r.SetFormat(layers.LinkTypeLinuxSLL2, 262144); err != nil {
		t.Fatal(err)
	}
	return r
}

// ngPacket is what a pcapng file holds of a packet.
type ngPacket struct {
	ci   gopacket.CaptureInfo
	data []byte
}

// readNg reads a pcapng file with gopacket's reader (another implementation than the
// ring's): its interface and packets.
func readNg(t testing.TB, path string) (pcapgo.NgInterface, []ngPacket) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	intf, err := r.Interface(0)
	if err != nil {
		t.Fatal(err)
	}
	var out []ngPacket
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return intf, out
		}
		if err != nil {
			t.Fatalf("%s: packet %d: %v", path, len(out), err)
		}
		ci.AncillaryData, ci.InterfaceIndex = nil, 0
		out = append(out, ngPacket{ci, data})
	}
}

// shbComments returns the opt_comment values of the first section header of a pcapng file.
func shbComments(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(b) < 28 || le.Uint32(b) != 0x0A0D0D0A || le.Uint32(b[8:]) != 0x1A2B3C4D {
		t.Fatalf("%s: no little-endian section header", path)
	}
	end := int(le.Uint32(b[4:])) - 4
	var out []string
	for o := 24; o+4 <= end; {
		code, n := le.Uint16(b[o:]), int(le.Uint16(b[o+2:]))
		if code == 0 {
			break
		}
		if code == 1 {
			out = append(out, string(b[o+4:o+4+n]))
		}
		o += 4 + n + (-n & 3)
	}
	return out
}

func TestRingPcapngRotationNamesAndCounts(t *testing.T) {
	r := newNgRing(t, 3, 400)
	sizes := []int{100, 101, 102, 103, 250, 7, 1, 300, 2, 3}
	var want []ngPacket
	for i, n := range sizes {
		ci, data := packet(n, int64(i))
		if err := r.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
		ci.Timestamp = ci.Timestamp.Truncate(time.Microsecond)
		want = append(want, ngPacket{ci, data})
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	files := r.Files()
	if got := names(files); !slices.Equal(got, []string{"r.pcapng2", "r.pcapng0", "r.pcapng1"}) {
		t.Fatalf("files %v, oldest first", got)
	}
	var got []ngPacket
	var disk int64
	for _, p := range files {
		intf, pkts := readNg(t, p)
		if intf.LinkType != layers.LinkTypeLinuxSLL2 || intf.SnapLength != 262144 {
			t.Errorf("%s: interface %v/%d", p, intf.LinkType, intf.SnapLength)
		}
		if c := shbComments(t, p); !slices.Equal(c, testSection.Comments) {
			t.Errorf("%s: comments %q", p, c)
		}
		fi, _ := os.Stat(p)
		if fi.Size()%4 != 0 {
			t.Errorf("%s: %d bytes, not 32-bit aligned", p, fi.Size())
		}
		disk += fi.Size()
		got = append(got, pkts...)
	}
	// the ring wrapped: the last files hold the newest packets, in order
	if len(got) == 0 || len(got) >= len(want) {
		t.Fatalf("%d packets kept of %d: the ring did not wrap", len(got), len(want))
	}
	for i, p := range got {
		w := want[len(want)-len(got)+i]
		if !p.ci.Timestamp.Equal(w.ci.Timestamp) || p.ci.CaptureLength != w.ci.CaptureLength || p.ci.Length != w.ci.Length || !bytes.Equal(p.data, w.data) {
			t.Errorf("packet %d read back as %+v, written %+v", i, p.ci, w.ci)
		}
	}
	c := r.Counts()
	if c.Packets != uint64(len(sizes)) || c.Rotations < 3 {
		t.Errorf("counts %+v", c)
	}
	if r.DiskBytes() != disk {
		t.Errorf("DiskBytes() = %d, the files hold %d", r.DiskBytes(), disk)
	}
}

// A file rotates once it exceeds the file size, as the pcap ring: its size counts the
// header and every block.
func TestRingPcapngRotationBoundary(t *testing.T) {
	probe := newNgRing(t, 1, 0)
	write(t, probe, 100)
	if err := probe.Close(); err != nil {
		t.Fatal(err)
	}
	one := probe.DiskBytes() // the header and a 100-byte packet's block (32 + 100)
	for _, tc := range []struct {
		name     string
		fileSize int64
		want     []string
	}{
		{"exactly at limit: no rotation", one, []string{"r.pcapng0"}},
		{"one byte over: rotation", one - 1, []string{"r.pcapng0", "r.pcapng1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newNgRing(t, 3, tc.fileSize)
			write(t, r, 100, 1)
			if got := names(r.Files()); !slices.Equal(got, tc.want) {
				t.Fatalf("files %v, want %v", got, tc.want)
			}
		})
	}
	if fb := probe.Counts().FileBytes; int64(fb) != one || one%4 != 0 {
		t.Errorf("FileBytes %d, DiskBytes %d", fb, one)
	}
}

// WorstCaseBytes bounds what a ring holds, in either format, at every moment; a file passes
// its size by at most one record, so the bound is reached exactly by the worst stream.
func TestWorstCaseBytesBoundsTheDisk(t *testing.T) {
	const files, snaplen = 3, 1025 // 1025: a full record needs 3 bytes of padding in pcapng
	for _, format := range []string{capture.FormatPcap, capture.FormatPcapng} {
		t.Run(format, func(t *testing.T) {
			r := newRing(t, capture.RingOptions{Base: "r", Files: files, FileSize: 20_000, Format: format, Section: testSection})
			if err := r.SetFormat(layers.LinkTypeLinuxSLL2, snaplen); err != nil {
				t.Fatal(err)
			}
			bound := capture.WorstCaseFormatBytes(format, files, 20_000, snaplen)
			if all := capture.WorstCaseBytes(files, 20_000, snaplen); all < bound {
				t.Fatalf("WorstCaseBytes %d under the %s bound %d", all, format, bound)
			}
			rng := rand.New(rand.NewPCG(7, 7))
			for i := range 2000 {
				n := snaplen
				if rng.IntN(2) == 0 {
					n = rng.IntN(snaplen + 1)
				}
				ci, data := packet(n, int64(i))
				if err := r.WritePacket(ci, data); err != nil {
					t.Fatal(err)
				}
				if d := r.DiskBytes(); d > bound {
					t.Fatalf("after %d packets the ring holds %d bytes, over the bound %d", i+1, d, bound)
				}
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			perFile := capture.WorstCaseFormatBytes(format, 1, 20_000, snaplen)
			for _, p := range r.Files() {
				if fi, _ := os.Stat(p); fi.Size() > perFile {
					t.Errorf("%s: %d bytes, over the bound of one file %d", p, fi.Size(), perFile)
				}
			}
		})
	}
	// the bound is tight: a file exactly at its size, then a full record
	r := newNgRing(t, 1, 0)
	write(t, r, 100)
	_ = r.Flush()
	atSize := r.DiskBytes()
	r2 := newRing(t, capture.RingOptions{Base: "r", Files: 1, FileSize: atSize, Format: capture.FormatPcapng, Section: testSection})
	if err := r2.SetFormat(layers.LinkTypeLinuxSLL2, snaplen); err != nil {
		t.Fatal(err)
	}
	write(t, r2, 100, snaplen)
	if got, want := r2.DiskBytes(), atSize+32+snaplen+3; got != int64(want) {
		t.Errorf("a file at its size and a full record: %d bytes, want %d", got, want)
	}
	if got, bound := r2.DiskBytes(), capture.WorstCaseFormatBytes(capture.FormatPcapng, 1, atSize, snaplen); got > bound {
		t.Errorf("%d bytes over the bound %d", got, bound)
	}
}

func TestRingRefusesAnUnknownFormat(t *testing.T) {
	if _, err := capture.NewRing(capture.RingOptions{Dir: t.TempDir(), Base: "r", Files: 1, Format: "snoop"}); err == nil {
		t.Fatal("NewRing accepted format snoop")
	}
}

// FuzzRingPcapng writes random packet sequences through a pcapng ring and reads the files
// back with gopacket's pcapng reader: the packets kept are the newest ones, unchanged.
func FuzzRingPcapng(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 255, 254}, uint16(300), uint8(3))
	f.Add(bytes.Repeat([]byte{7}, 64), uint16(64), uint8(1))
	f.Add([]byte{}, uint16(1), uint8(2))
	f.Fuzz(func(t *testing.T, seed []byte, fileSize uint16, files uint8) {
		files = 1 + files%8
		dir := t.TempDir()
		r, err := capture.NewRing(capture.RingOptions{Dir: dir, Base: "f.pcapng", Files: int(files), FileSize: int64(fileSize) + 1,
			Format: capture.FormatPcapng, Section: capture.SectionInfo{Comments: []string{string(seed)}}})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if err := r.SetFormat(layers.LinkTypeEthernet, 65535); err != nil {
			t.Fatal(err)
		}
		var want []ngPacket
		ts := time.Unix(1_700_000_000, 0)
		for i, b := range seed {
			n := int(b) * (1 + i%5) // 0 to 1275 bytes, every padding
			data := make([]byte, n)
			for j := range data {
				data[j] = byte(i ^ j)
			}
			ts = ts.Add(time.Duration(b) * 1001 * time.Nanosecond)
			ci := gopacket.CaptureInfo{Timestamp: ts, CaptureLength: n, Length: n + int(b)}
			if err := r.WritePacket(ci, data); err != nil {
				t.Fatal(err)
			}
			ci.Timestamp = ts.Truncate(time.Microsecond)
			want = append(want, ngPacket{ci, data})
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		var got []ngPacket
		var disk int64
		for _, p := range r.Files() {
			_, pkts := readNg(t, p)
			got = append(got, pkts...)
			fi, _ := os.Stat(p)
			disk += fi.Size()
		}
		if len(got) > len(want) || (r.Counts().Rotations < uint64(files) && len(got) != len(want)) {
			t.Fatalf("%d packets read back of %d written (%d rotations, %d files)", len(got), len(want), r.Counts().Rotations, files)
		}
		for i, p := range got {
			w := want[len(want)-len(got)+i]
			if !p.ci.Timestamp.Equal(w.ci.Timestamp) || p.ci.CaptureLength != w.ci.CaptureLength || p.ci.Length != w.ci.Length || !bytes.Equal(p.data, w.data) {
				t.Fatalf("packet %d of %d read back as %+v, written %+v", i, len(got), p.ci, w.ci)
			}
		}
		if disk != r.DiskBytes() || disk > capture.WorstCaseBytes(int(files), int64(fileSize)+1, 1275) {
			t.Fatalf("files hold %d bytes, DiskBytes %d, bound %d", disk, r.DiskBytes(), capture.WorstCaseBytes(int(files), int64(fileSize)+1, 1275))
		}
		if _, err := os.Stat(filepath.Join(dir, "f.pcapng"+map[bool]string{true: "", false: "0"}[files == 1])); err != nil {
			t.Fatalf("the first file: %v", err)
		}
	})
}

// A policy capture that asks for pcapng writes capture-<pod>.pcapng<N> in its directory,
// its section header naming the trigger and the pod; a manual one asking for it gets pcap.
func TestCaptureFormatThroughTheManager(t *testing.T) {
	f := newFixture(t, 4, nil)
	f.res.Set("default", "web", capture.Target{PID: 42})
	s := policySpec("web", 0)
	s.Source, s.Format, s.Alerts = capture.SourceAlert, capture.FormatPcapng, "1a2b"
	s.Trigger = "rule: alert HighTCPRetransmits\nalert HighTCPRetransmits fingerprint 1a2b"
	ensure(t, f.m, s)
	var file string
	eventually(t, "the pcapng ring's first file, its header flushed", func() bool {
		m, _ := filepath.Glob(filepath.Join(f.dir, "default", "web", "*-*", "capture-web.pcapng0"))
		if len(m) != 1 {
			return false
		}
		file = m[0]
		fi, err := os.Stat(file)
		return err == nil && fi.Size() > 0
	})
	if c := shbComments(t, file); !slices.Equal(c, []string{"rule: alert HighTCPRetransmits", "alert HighTCPRetransmits fingerprint 1a2b", "pod default/web", "podcap-agent dev"}) {
		t.Errorf("comments %q", c)
	}
	f.m.Stop("default", "web")
	eventually(t, "stopped", func() bool { return f.events.count("CaptureStopped") == 1 })

	m := spec("default", "api", 2)
	m.Format = capture.FormatPcapng // refused for a manual capture: it stays tcpdump's pcap
	f.res.Set("default", "api", capture.Target{PID: 43})
	ensure(t, f.m, m)
	first := filepath.Join(f.dir, "default", "api", "capture-api.pcap0")
	eventually(t, "the manual ring's header", func() bool { fi, err := os.Stat(first); return err == nil && fi.Size() >= 24 })
	openPcap(t, first) // a pcap file
}
