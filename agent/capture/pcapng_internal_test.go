package capture

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

func TestRingFormatOfASpec(t *testing.T) {
	for _, tc := range []struct {
		source, format    string
		wantFmt, wantBase string
	}{
		{SourceManual, "", FormatPcap, "capture-web.pcap"},
		{SourceManual, FormatPcapng, FormatPcap, "capture-web.pcap"}, // manual stays tcpdump's
		{SourcePolicy, "", FormatPcap, "capture-web.pcap"},
		{SourcePolicy, FormatPcap, FormatPcap, "capture-web.pcap"},
		{SourcePolicy, FormatPcapng, FormatPcapng, "capture-web.pcapng"},
		{SourceAlert, FormatPcapng, FormatPcapng, "capture-web.pcapng"},
	} {
		s := Spec{Namespace: "default", Pod: "web", Source: tc.source, Format: tc.format}
		if got := ringFormat(s); got != tc.wantFmt {
			t.Errorf("%s/%q: format %q, want %q", tc.source, tc.format, got, tc.wantFmt)
		}
		if got := ringBase(s); got != tc.wantBase || !strings.HasPrefix(got, RingBase(s.Pod)) {
			t.Errorf("%s/%q: base %q, want %q", tc.source, tc.format, got, tc.wantBase)
		}
	}
}

func TestRingSectionComments(t *testing.T) {
	s := Spec{Namespace: "shop", Pod: "cart-1", Trigger: "rule: alert HighTCPRetransmits\n\n" +
		"alert HighTCPRetransmits fingerprint 1a2b3c generatorURL http://prom:9090/graph?g0.expr=x\r\n"}
	got := ringSection(s, "node-a", "")
	want := []string{
		"rule: alert HighTCPRetransmits",
		"alert HighTCPRetransmits fingerprint 1a2b3c generatorURL http://prom:9090/graph?g0.expr=x",
		"pod shop/cart-1", "node node-a", "podcap-agent dev",
	}
	if !slices.Equal(got.Comments, want) {
		t.Errorf("comments %q, want %q", got.Comments, want)
	}
	if got.UserAppl != "podcap" || got.OS == "" || got.Hardware == "" {
		t.Errorf("section %+v: want shb_userappl podcap, shb_os and shb_hardware", got)
	}
	if c := ringSection(Spec{Namespace: "a", Pod: "b"}, "", "v1.2.3").Comments; !slices.Equal(c, []string{"pod a/b", "podcap-agent v1.2.3"}) {
		t.Errorf("no trigger, no node: comments %q", c)
	}
}

// A trigger made from hostile policy or alert data stays inside the header's bounds, keeps
// the pod, node and agent lines, and says what it left out.
func TestRingSectionIsBounded(t *testing.T) {
	line := "alert \x1b[31mRed\x00\x7f " + strings.Repeat("é", 1500) + "\xff\xfe"
	s := Spec{Namespace: "ns", Pod: "p", Trigger: strings.Repeat(line+"\n", 200)}
	got := ringSection(s, strings.Repeat("n", 5000), "v\n2")
	total := 0
	for _, c := range got.Comments {
		total += len(c)
		if len(c) > MaxSectionOption || !utf8.ValidString(c) || strings.IndexFunc(c, unicode.IsControl) >= 0 {
			t.Fatalf("comment of %d bytes, valid UTF-8 %v: %q", len(c), utf8.ValidString(c), c[:min(len(c), 80)])
		}
	}
	if len(got.Comments) > MaxSectionComments || total > MaxSectionCommentBytes {
		t.Fatalf("%d comments of %d bytes: over the bounds", len(got.Comments), total)
	}
	n := len(got.Comments)
	if n < 5 || got.Comments[n-3] != "pod ns/p" || !strings.HasPrefix(got.Comments[n-2], "node nnn") || got.Comments[n-1] != "podcap-agent v 2" {
		t.Fatalf("last comments %q", got.Comments[max(n-4, 0):])
	}
	if !strings.Contains(got.Comments[n-4], "more comment(s) left out") {
		t.Errorf("no note of what was left out: %q", got.Comments[n-4])
	}
	if !strings.HasPrefix(got.Comments[0], "alert  [31mRed   éé") || !strings.HasSuffix(got.Comments[0], "é…") {
		t.Errorf("first comment %q…", got.Comments[0][:40])
	}
}

// ngMaxHeaderLen bounds the header of any SectionInfo, however large, once bounded.
func TestPcapngHeaderBound(t *testing.T) {
	big := strings.Repeat("x", 3*MaxSectionOption)
	var many []string
	for i := range 3 * MaxSectionComments {
		many = append(many, strings.Repeat("y", 1+i%7)) // every padding
	}
	for _, s := range []SectionInfo{
		{Comments: slices.Repeat([]string{big}, 100), Hardware: big, OS: big, UserAppl: big},
		{Comments: many, Hardware: big, OS: big, UserAppl: big},
		{Comments: slices.Repeat([]string{strings.Repeat("z", 255)}, 100), Hardware: "h", OS: "o", UserAppl: "u"},
		{},
	} {
		b := s.bounded()
		h := ngHeader(b, layers.LinkTypeLinuxSLL2, 262144)
		if len(h) > ngMaxHeaderLen || len(h)%4 != 0 {
			t.Errorf("header of %d comments: %d bytes, bound %d (and a multiple of 4)", len(b.Comments), len(h), ngMaxHeaderLen)
		}
		shb := binary.LittleEndian.Uint32(h[4:8])
		if binary.LittleEndian.Uint32(h[shb-4:shb]) != shb || int(shb)+ngIDBLen != len(h) {
			t.Errorf("section header block length %d: trailer or IDB wrong", shb)
		}
	}
}

// The pcapng ring recovers from a write error like the pcap ring: on the next SetFormat,
// in the next file, which is a complete pcapng file again.
func TestRingPcapngRecoversFromAWriteError(t *testing.T) {
	dir := t.TempDir()
	r, err := NewRing(RingOptions{Dir: dir, Base: "capture-web.pcapng", Files: 3, FlushInterval: time.Hour,
		Format: FormatPcapng, Section: SectionInfo{Comments: []string{"c"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: 61, Length: 61}
	data := make([]byte, 61)
	if err := r.SetFormat(layers.LinkTypeLinuxSLL2, 262144); err != nil {
		t.Fatal(err)
	}
	if err := r.WritePacket(ci, data); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	_ = r.f.Close()
	r.mu.Unlock()
	if err := r.Flush(); err == nil {
		t.Fatal("Flush after the file went bad: no error")
	}
	if err := r.WritePacket(ci, data); err == nil {
		t.Fatal("WritePacket after a write error: no error")
	}
	if err := r.SetFormat(layers.LinkTypeLinuxSLL2, 262144); err != nil {
		t.Fatalf("SetFormat after a write error: %v", err)
	}
	for range 2 {
		if err := r.WritePacket(ci, data); err != nil {
			t.Fatalf("WritePacket after recovering: %v", err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "capture-web.pcapng1"))
	if err != nil {
		t.Fatalf("the next file of the ring: %v", err)
	}
	defer f.Close()
	nr, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, _, err := nr.ReadPacketData(); err != nil {
			break
		}
		n++
	}
	if n != 2 || nr.SectionInfo().Comment != "c" {
		t.Fatalf("%d packets in capture-web.pcapng1 (want 2), comment %q", n, nr.SectionInfo().Comment)
	}
}
