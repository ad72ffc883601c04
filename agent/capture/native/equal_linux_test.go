package native_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/native"
)

// maxTimestampSkew bounds how far the native engine's timestamp of a packet may be from
// tcpdump's (both read the kernel's timestamp of the same skb; tcpdump's file keeps µs).
const maxTimestampSkew = 2 * time.Millisecond

// sendTraffic sends n UDP datagrams of distinct sizes from B to A's port 9 (nothing listens:
// A answers some with ICMP port unreachable, outgoing packets of another kind), some of them
// larger than the MTU (IP fragments), one at a time.
func sendTraffic(t *testing.T, p *netnsPair, n int) {
	t.Helper()
	c := udpConnIn(t, p.bPath())
	for i := range n {
		size := 2 + i*37%3000 // 2 to 2998 bytes: fragments past 1472
		payload := bytes.Repeat([]byte{byte(i)}, size)
		binary.BigEndian.PutUint16(payload, uint16(i))
		if _, err := c.WriteToUDP(payload, &net.UDPAddr{IP: p.aIP, Port: 9}); err != nil {
			t.Fatalf("send datagram %d: %v", i, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSameAsTcpdump captures one traffic with tcpdump (the tcpdump engine's flags) and the
// native engine at once in the same namespace: same packets, same order, same bytes (the
// LINUX_SLL2 header included), same lengths, timestamps within maxTimestampSkew.
func TestSameAsTcpdump(t *testing.T) {
	needRoot(t)
	e, err := native.New(native.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		o       capture.SourceOptions
		atLeast int // packets tcpdump must capture for the comparison to mean something
	}{
		{"whole packets", capture.SourceOptions{}, 200},
		{"snaplen 100", capture.SourceOptions{Snaplen: 100}, 200},
		{"filter udp", capture.SourceOptions{Filter: "udp"}, 200},
		// A's ICMP port unreachable answers (rate-limited by the kernel)
		{"filter outbound icmp", capture.SourceOptions{Filter: "outbound and icmp"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newNetnsPair(t)
			td := startTcpdump(t, p.aPath(), tc.o.Snaplen, tc.o.Filter)
			src, err := e.Open(context.Background(), capture.Target{NetNSPath: p.aPath()}, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if src.LinkType() != layers.LinkTypeLinuxSLL2 {
				t.Errorf("link type %v", src.LinkType())
			}
			wait := readInBackground(src)
			from := time.Now()
			sendTraffic(t, p, 200)
			to := time.Now()
			time.Sleep(100 * time.Millisecond) // tcpdump: the last packets
			want := td.stop(t)
			src.Stop()
			got, err := wait()
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			st := src.Stats()
			if st.Captured != uint64(len(got)) || st.Received < st.Captured || st.Dropped != 0 {
				t.Errorf("stats %+v after reading %d packets", st, len(got))
			}
			// Only the traffic's packets: a packet of the namespaces' own could come between
			// the two captures' starts or ends.
			got, want = within(got, from, to), within(want, from, to)
			skew := comparePackets(t, got, want)
			t.Logf("%d packets from tcpdump, %d from the native engine (stats %+v); largest timestamp difference %v",
				len(want), len(got), st, skew)
			if len(want) < tc.atLeast {
				t.Errorf("tcpdump captured %d packets, want at least %d", len(want), tc.atLeast)
			}
		})
	}
}

// within returns the packets of pkts with a timestamp from from to to.
func within(pkts []pkt, from, to time.Time) []pkt {
	var in []pkt
	for _, p := range pkts {
		if !p.ci.Timestamp.Before(from) && !p.ci.Timestamp.After(to) {
			in = append(in, p)
		}
	}
	return in
}

// comparePackets reports every difference between got and want; it returns the largest
// timestamp difference.
func comparePackets(t *testing.T, got, want []pkt) time.Duration {
	t.Helper()
	var skew time.Duration
	diffs := 0
	for i := range max(len(got), len(want)) {
		if diffs > 10 {
			t.Errorf("more differences not shown")
			break
		}
		if i >= len(got) || i >= len(want) {
			diffs++
			if i >= len(got) {
				t.Errorf("packet %d: native engine lacks %s", i, describe(want[i]))
			} else {
				t.Errorf("packet %d: native engine has %s more", i, describe(got[i]))
			}
			continue
		}
		g, w := got[i], want[i]
		d := g.ci.Timestamp.Sub(w.ci.Timestamp).Abs()
		skew = max(skew, d)
		if !bytes.Equal(g.data, w.data) || g.ci.Length != w.ci.Length || g.ci.CaptureLength != w.ci.CaptureLength || d > maxTimestampSkew {
			diffs++
			t.Errorf("packet %d differs:\n native  %s ts %v\n tcpdump %s ts %v\n native  % x\n tcpdump % x",
				i, describe(g), g.ci.Timestamp, describe(w), w.ci.Timestamp, head(g.data), head(w.data))
		}
	}
	return skew
}

func describe(p pkt) string {
	return fmt.Sprintf("[len %d caplen %d]", p.ci.Length, p.ci.CaptureLength)
}

func head(b []byte) []byte { return b[:min(len(b), 48)] }
