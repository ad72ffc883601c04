package capture_test

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/podcap/podcap/agent/capture"
)

// The real tools read the pcapng ring: Wireshark's capinfos and tshark show the section
// header's comments, the packet count and the link type; tcpdump (through libpcap) reads
// the packets.

// lookTool finds a tool the test needs, or fails saying which Debian package installs it.
func lookTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("this test needs %s (DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends %s): %v", name, pkg, err)
	}
	return p
}

// sll2UDP is a LINUX_SLL2 frame of an IPv4/UDP packet from 10.213.0.1:<10000+i> to
// 10.213.0.2:9999 with payload bytes, as tcpdump -i any captures it.
func sll2UDP(t *testing.T, i, payload int) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Id: uint16(i), Protocol: layers.IPProtocolUDP,
		SrcIP: []byte{10, 213, 0, 1}, DstIP: []byte{10, 213, 0, 2}}
	udp := &layers.UDP{SrcPort: layers.UDPPort(10000 + i), DstPort: 9999}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(make([]byte, payload))); err != nil {
		t.Fatal(err)
	}
	var h [20]byte
	binary.BigEndian.PutUint16(h[0:2], 0x0800) // protocol: IPv4
	binary.BigEndian.PutUint32(h[4:8], 2)      // interface index
	binary.BigEndian.PutUint16(h[8:10], 1)     // ARPHRD_ETHER
	h[10] = 0                                  // to us
	h[11] = 6                                  // address length
	copy(h[12:], []byte{0x02, 0, 0, 0, 0, 1})
	return append(h[:], buf.Bytes()...)
}

func TestRingPcapngWithWiresharkAndTcpdump(t *testing.T) {
	capinfos := lookTool(t, "capinfos", "wireshark-common")
	tshark := lookTool(t, "tshark", "tshark")
	tcpdump := lookTool(t, "tcpdump", "tcpdump")

	s := capture.Spec{Namespace: "shop", Pod: "cart-1", Source: capture.SourceAlert, Format: capture.FormatPcapng,
		Trigger: "rule: alert HighTCPRetransmits fired for shop/cart-1\n" +
			"alert HighTCPRetransmits fingerprint 1a2b3c4d5e6f7a8b generatorURL http://prometheus:9090/graph?g0.expr=rate%28x%5B1m%5D%29"}
	comments := capture.RingSectionForTest(s, "node-a", "v0.9.0")
	dir := t.TempDir()
	r, err := capture.NewRing(capture.RingOptions{Dir: dir, Base: "capture-cart-1.pcapng", Files: 3, FileSize: 20_000,
		Format: capture.FormatPcapng, Section: comments})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetFormat(layers.LinkTypeLinuxSLL2, 262144); err != nil {
		t.Fatal(err)
	}
	const n = 40 // 40 packets of ~1 KB: three files, not wrapped
	start := time.Date(2026, 12, 6, 6, 0, 0, 123456789, time.UTC)
	for i := range n {
		data := sll2UDP(t, i, 997+i%4)
		ci := gopacket.CaptureInfo{Timestamp: start.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(data), Length: len(data)}
		if err := r.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	files := r.Files()
	if len(files) != 3 {
		t.Fatalf("ring files %v, want 3", names(files))
	}

	total := 0
	var times []string
	for _, f := range files {
		// capinfos: type, encapsulation, packets, comments
		out := run(t, capinfos, "-M", "-t", "-E", "-c", "-k", f)
		for _, want := range []string{"File type:           pcapng", "File encapsulation:  linux-sll2",
			"Capture comment:     rule: alert HighTCPRetransmits fired for shop/cart-1",
			"Capture comment:     alert HighTCPRetransmits fingerprint 1a2b3c4d5e6f7a8b generatorURL http://prometheus:9090/graph?g0.expr=rate%28x%5B1m%5D%29",
			"Capture comment:     pod shop/cart-1", "Capture comment:     node node-a", "Capture comment:     podcap-agent v0.9.0"} {
			if !strings.Contains(out, want) {
				t.Errorf("capinfos %s: no %q in\n%s", filepath.Base(f), want, out)
			}
		}
		pkts := field(t, out, "Number of packets:")
		total += pkts

		// tshark decodes every packet as UDP over SLL2, with its microsecond timestamp
		for _, l := range strings.Split(strings.TrimSpace(run(t, tshark, "-r", f, "-T", "fields",
			"-e", "frame.time_epoch", "-e", "sll.ifindex", "-e", "udp.dstport")), "\n") {
			want := fmt.Sprintf("1796536800.%03d456000\t2\t9999", 123+len(times))
			if l != want {
				t.Errorf("tshark %s: packet %d is %q, want %q", filepath.Base(f), len(times), l, want)
			}
			times = append(times, l)
		}

		// tcpdump reads it through libpcap
		lines := strings.Split(strings.TrimSpace(run(t, tcpdump, "-nn", "-r", f)), "\n")
		if len(lines) != pkts || !strings.Contains(lines[0], "10.213.0.1.") || !strings.Contains(lines[0], "> 10.213.0.2.9999: UDP") {
			t.Errorf("tcpdump -r %s: %d lines (want %d), first %q", filepath.Base(f), len(lines), pkts, lines[0])
		}
	}
	if total != n || len(times) != n {
		t.Errorf("capinfos counts %d packets in the ring, tshark %d; %d written", total, len(times), n)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("%s %v: %v\n%s%s", filepath.Base(name), args, err, out, stderr)
	}
	return string(out)
}

// field returns the number after label in a capinfos report.
func field(t *testing.T, out, label string) int {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, label); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("capinfos %q: %v", l, err)
			}
			return n
		}
	}
	t.Fatalf("capinfos: no %q in\n%s", label, out)
	return 0
}
