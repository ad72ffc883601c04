package plugin

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// pcapFile is a pcap file of one-byte packets (the byte is the packet's id) at the given
// offsets from t0.
func pcapFile(t *testing.T, link layers.LinkType, nanos bool, packets map[byte]time.Duration, order ...byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if nanos {
		w = pcapgo.NewWriterNanos(&b)
	}
	if err := w.WriteFileHeader(262144, link); err != nil {
		t.Fatal(err)
	}
	for _, id := range order {
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(packets[id]), CaptureLength: 1, Length: 1}
		if err := w.WritePacket(ci, []byte{id}); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func readIDs(t *testing.T, b []byte) (layers.LinkType, []byte) {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var ids []byte
	var last time.Time
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return r.LinkType(), ids
		}
		if err != nil {
			t.Fatal(err)
		}
		if ci.Timestamp.Before(last) {
			t.Errorf("packet %d at %v before its predecessor at %v", data[0], ci.Timestamp, last)
		}
		last = ci.Timestamp
		ids = append(ids, data[0])
	}
}

func TestMergePcap(t *testing.T) {
	times := map[byte]time.Duration{1: 0, 2: time.Millisecond, 3: 2 * time.Millisecond, 4: 3 * time.Millisecond, 5: 3 * time.Millisecond, 6: 4 * time.Millisecond}
	sll2 := layers.LinkTypeLinuxSLL2
	a := pcapFile(t, sll2, false, times, 1, 3, 5)
	b := pcapFile(t, sll2, false, times, 2, 4, 6)
	var out bytes.Buffer
	res, err := MergePcap(&out, bytes.NewReader(a), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	link, ids := readIDs(t, out.Bytes())
	// 5 (file 1) and 4 (file 2) share a time: the earlier file's first
	if link != sll2 || string(ids) != "\x01\x02\x03\x05\x04\x06" || res.Packets != 6 || len(res.Truncated) != 0 {
		t.Errorf("link %v, ids %v, %+v", link, ids, res)
	}
}

func TestMergePcapNanosAndTruncated(t *testing.T) {
	times := map[byte]time.Duration{1: 1500, 2: 1000, 3: 5000}
	micro := pcapFile(t, layers.LinkTypeEthernet, false, times, 3)
	nano := pcapFile(t, layers.LinkTypeEthernet, true, times, 2, 1)
	nano = append(nano, pcapFile(t, layers.LinkTypeEthernet, true, times, 3)[24:30]...) // half a record header
	var out bytes.Buffer
	res, err := MergePcap(&out, bytes.NewReader(nano), bytes.NewReader(micro))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(bytes.NewReader(out.Bytes()))
	if err != nil || r.Resolution() != gopacket.TimestampResolutionNanosecond {
		t.Fatalf("merged file: %v, resolution %v: want nanoseconds", err, r.Resolution())
	}
	// file 1 is out of order inside itself (2 then 1): merging keeps each file's order
	if _, ids := readIDs(t, out.Bytes()); len(ids) != 3 || ids[2] != 3 {
		t.Errorf("ids %v", ids)
	}
	if len(res.Truncated) != 1 || res.Truncated[0] != 0 {
		t.Errorf("truncated %v, want [0]", res.Truncated)
	}
}

func TestMergePcapRefuses(t *testing.T) {
	times := map[byte]time.Duration{1: 0}
	eth := pcapFile(t, layers.LinkTypeEthernet, false, times, 1)
	sll2 := pcapFile(t, layers.LinkTypeLinuxSLL2, false, times, 1)
	var ng bytes.Buffer
	w, err := pcapgo.NewNgWriter(&ng, layers.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	for name, tc := range map[string]struct {
		inputs [][]byte
		want   string
	}{
		"link types": {[][]byte{sll2, eth}, "different link types (Linux SLL2 in file 1, Ethernet in file 2)"},
		"pcapng":     {[][]byte{eth, ng.Bytes()}, "file 2: pcapng files are not merged"},
		"garbage":    {[][]byte{[]byte("not a pcap file at all")}, "file 1:"},
		"none":       {nil, "no files to merge"},
	} {
		t.Run(name, func(t *testing.T) {
			var rs []io.Reader
			for _, b := range tc.inputs {
				rs = append(rs, bytes.NewReader(b))
			}
			_, err := MergePcap(io.Discard, rs...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}
