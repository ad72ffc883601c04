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

// writePcap writes a pcap file of packets at the given times (none: the header only).
func writePcap(t *testing.T, path string, times ...time.Time) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(262144, layers.LinkTypeLinuxSLL2); err != nil {
		t.Fatal(err)
	}
	for _, ts := range times {
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: 4, Length: 4}, []byte{1, 2, 3, 4}); err != nil {
			t.Fatal(err)
		}
	}
}

// Ring files with the same mtime (several rotations within one tick of the file system's
// clock): the ring resumes after the file written last, known by its first packet, or by
// holding only its header.
func TestAdoptRingBreaksMtimeTiesByContent(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	mtime := time.Now().Add(-time.Minute)
	for _, tc := range []struct {
		name  string
		first map[int]time.Duration // file index -> first packet after t0; -1: header only
		want  int                   // start index
	}{
		{"newest is file 1", map[int]time.Duration{0: 1, 1: 3, 2: 2}, 2},
		{"the ring lapped: newest is file 0", map[int]time.Duration{0: 5, 1: 3, 2: 4}, 1},
		{"a header-only file is the current one", map[int]time.Duration{0: 1, 1: -1, 2: 2}, 2},
		{"one file", map[int]time.Duration{2: 1}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			base := RingBase("web")
			for i, d := range tc.first {
				p := filepath.Join(dir, RingFileName(base, 3, i))
				if d < 0 {
					writePcap(t, p)
				} else {
					writePcap(t, p, t0.Add(d*time.Second), t0.Add(d*time.Second+time.Millisecond))
				}
				if err := os.Chtimes(p, mtime, mtime); err != nil {
					t.Fatal(err)
				}
			}
			start, err := adoptRing(dir, base, 3)
			if err != nil || start != tc.want {
				t.Fatalf("start %d, err %v; want %d", start, err, tc.want)
			}
		})
	}
}
