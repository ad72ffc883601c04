package capture_test

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/podcap/podcap/agent/capture"
)

// TestRingMatchesTcpdump writes the same packets through real tcpdump (-r in -C 1 -W N -w)
// and through the Ring and requires the same file names, sizes and bytes.
func TestRingMatchesTcpdump(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Fatalf("this test needs tcpdump (apt-get install -y tcpdump): %v", err)
	}
	full := synthPcap(t, 6000, capture.DefaultSnaplen, 1) // ~5.6 MB: wraps a ring of 3 files
	short := synthPcap(t, 30000, 96, 2)                   // truncated records (caplen < len)
	small := synthPcap(t, 10, capture.DefaultSnaplen, 3)  // fits in one file
	for _, tc := range []struct {
		name  string
		in    string
		files int
		names []string // tcpdump's, checked so the comparison cannot pass vacuously
		wraps bool
	}{
		{"N=1", full, 1, []string{"ref.pcap"}, true},
		{"N=3 wraps", full, 3, []string{"ref.pcap0", "ref.pcap1", "ref.pcap2"}, true},
		{"N=12", full, 12, []string{"ref.pcap00", "ref.pcap01", "ref.pcap02", "ref.pcap03", "ref.pcap04", "ref.pcap05"}, false},
		{"N=3 snaplen 96", short, 3, []string{"ref.pcap0", "ref.pcap1", "ref.pcap2"}, true},
		{"N=3 one file", small, 3, []string{"ref.pcap0"}, false},
		{"N=1 one file", small, 1, []string{"ref.pcap"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refDir, ringDir := t.TempDir(), t.TempDir()
			runTcpdump(t, tcpdump, tc.in, tc.files, filepath.Join(refDir, "ref.pcap"))
			writeRing(t, tc.in, tc.files, ringDir, "ref.pcap")

			ref, got := dirFiles(t, refDir), dirFiles(t, ringDir)
			if names := slices.Sorted(maps.Keys(ref)); !slices.Equal(names, tc.names) {
				t.Fatalf("tcpdump wrote %v, test expects %v", names, tc.names)
			}
			var total int64
			for _, b := range ref {
				total += int64(len(b))
			}
			if in, _ := os.Stat(tc.in); (total < in.Size()) != tc.wraps {
				t.Fatalf("tcpdump kept %d of %d bytes: wrapped = %v, test expects %v", total, in.Size(), total < in.Size(), tc.wraps)
			}
			if !slices.Equal(slices.Sorted(maps.Keys(ref)), slices.Sorted(maps.Keys(got))) {
				t.Fatalf("file names: tcpdump %v, ring %v", slices.Sorted(maps.Keys(ref)), slices.Sorted(maps.Keys(got)))
			}
			for name, want := range ref {
				if !bytes.Equal(got[name], want) {
					t.Errorf("%s: ring wrote %d bytes, tcpdump %d; contents differ", name, len(got[name]), len(want))
				}
			}
			t.Logf("%d files identical to tcpdump's", len(ref))
		})
	}
}

func runTcpdump(t *testing.T, tcpdump, in string, files int, out string) {
	t.Helper()
	args := []string{"-r", in, "-C", "1", "-W", strconv.Itoa(files), "-w", out}
	if os.Geteuid() == 0 {
		// Debian's tcpdump otherwise drops to user tcpdump and cannot create the next file.
		args = append(args, "-Z", "root")
	}
	if b, err := exec.Command(tcpdump, args...).CombinedOutput(); err != nil {
		t.Fatalf("tcpdump %v: %v\n%s", args, err, b)
	}
}

func writeRing(t *testing.T, in string, files int, dir, base string) {
	t.Helper()
	r := openPcap(t, in)
	ring, err := capture.NewRing(capture.RingOptions{Dir: dir, Base: base, Files: files})
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.SetFormat(r.LinkType(), r.Snaplen()); err != nil {
		t.Fatal(err)
	}
	for {
		data, ci, err := r.ZeroCopyReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := ring.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := ring.Close(); err != nil {
		t.Fatal(err)
	}
}

// synthPcap writes n Ethernet/IPv4/UDP packets of varied sizes (some jumbo) to a pcap file
// with the given snaplen, truncating records to it as a capture would.
func synthPcap(t testing.TB, n int, snaplen uint32, seed uint64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(snaplen, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 42))
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range n {
		size := rng.IntN(1400)
		if i%50 == 0 {
			size = 1400 + rng.IntN(7600)
		}
		data := synthPacket(t, i, size)
		ts = ts.Add(time.Duration(rng.IntN(3000)) * time.Microsecond)
		ci := gopacket.CaptureInfo{Timestamp: ts, Length: len(data), CaptureLength: len(data)}
		if ci.CaptureLength > int(snaplen) {
			ci.CaptureLength = int(snaplen)
			data = data[:snaplen]
		}
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func synthPacket(t testing.TB, i, payload int) []byte {
	t.Helper()
	eth := &layers.Ethernet{
		SrcMAC:       net.HardwareAddr{0x02, 0, 0, 0, 0, 1},
		DstMAC:       net.HardwareAddr{0x02, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4,
	}
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Id: uint16(i), Protocol: layers.IPProtocolUDP,
		SrcIP: net.IPv4(10, 213, 0, 1), DstIP: net.IPv4(10, 213, 0, 2),
	}
	udp := &layers.UDP{SrcPort: layers.UDPPort(10000 + i%1000), DstPort: 9999}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, payload)
	for j := range body {
		body[j] = byte(i + j)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, udp, gopacket.Payload(body)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}
