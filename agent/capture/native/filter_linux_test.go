package native_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/native"
)

// TestFiltersSameAsTcpdump runs every expression of a table, each by tcpdump and by the
// native engine at once, on one mixed traffic (UDP of many sizes and fragments, ICMP echo,
// TCP to an open and a closed port, IPv6 UDP, ARP and neighbour discovery): the native engine
// must capture the same packets as tcpdump, or refuse the expression when it cannot run it
// exactly (refused lists those), or refuse what tcpdump refuses.
func TestFiltersSameAsTcpdump(t *testing.T) {
	needRoot(t)
	e, err := native.New(native.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p := newNetnsPair(t)
	a6, _ := addIPv6(t, p)
	a, b := p.AIP.String(), p.BIP.String()
	filters := []string{
		"udp", "tcp", "icmp", "arp", "ip6", "icmp6", "ip6 and udp", "not udp",
		"host " + a, "src host " + b, "dst host " + a + " and udp", "net 10.214.0.0/16", "ip6 host " + a6,
		"port 1003", "portrange 1000-1004", "udp dst port 1005 or tcp port 8080", "tcp dst port 8080 and src host " + b,
		"tcp[tcpflags] & tcp-syn != 0", "tcp[tcpflags] & (tcp-rst|tcp-fin) != 0", "tcp[13] == 0x12",
		"icmp[icmptype] == icmp-echo", "icmp[icmptype] == icmp-echoreply", "icmp[icmptype] == icmp-unreach",
		"inbound", "outbound", "outbound and icmp", "inbound and not arp",
		"ifindex 2", "not ifindex 2",
		"ip[8] == 64", "ip[6:2] & 0x1fff != 0", "ip[6] & 0x20 != 0", "udp[8:2] == 7", "udp[8:2] > 40 and udp[8:2] < 60",
		"ip proto 17", "ip proto \\icmp", "ip broadcast", "ip multicast", "ip6 multicast",
		"tcp dst port http", "tcp src port 8080 and tcp[tcpflags] & tcp-push != 0",
		"not (src host " + a + ") and not arp", "(udp and ip[2:2] > 1000) or icmp6",
		// refused by the native engine: the length is not the same in the kernel; a loop
		"len > 200", "greater 500", "less 100", "ip6 protochain 17",
		// refused by tcpdump for LINUX_SLL2
		"vlan", "ether host 02:00:00:00:00:01", "ether broadcast",
	}
	refused := map[string]bool{"len > 200": true, "greater 500": true, "less 100": true, "ip6 protochain 17": true}
	// in rounds of a few expressions (each a tcpdump and a native capture), so that a busy
	// machine's tcpdumps keep up; a round in which a capture dropped packets is run again
	compared, total := 0, 0
	for batch := range slices.Chunk(filters, filterRoundSize) {
		var runs []*filterRun
		for attempt := 1; ; attempt++ {
			var dropped bool
			runs, dropped = filterRound(t, e, p, a6, batch, refused)
			if !dropped {
				break
			}
			if attempt == filterAttempts {
				t.Errorf("%v: a capture dropped packets in each of %d rounds; comparing the last", batch, attempt)
				break
			}
			t.Logf("%v: a capture dropped packets; running the round again", batch)
		}
		for _, r := range runs {
			if r.compared {
				t.Run(r.expr, func(t *testing.T) {
					comparePackets(t, r.got, r.want)
					t.Logf("%d packets", len(r.want))
				})
				compared++
				total += len(r.want)
			}
		}
	}
	t.Logf("%d expressions compared over %d packets of the traffic (tcpdump's), %d refused by the native engine, %d by tcpdump", compared, total, len(refused), len(filters)-compared-len(refused))
}

// Expressions per round of TestFiltersSameAsTcpdump, and rounds tried while a capture drops.
const (
	filterRoundSize = 8
	filterAttempts  = 3
)

// filterRun is one expression of a round: its tcpdump and native captures, and what each
// took of the traffic.
type filterRun struct {
	expr      string
	td        *tcpdumpCapture
	src       capture.Source
	wait      func() ([]pkt, error)
	tdRefuse  string
	got, want []pkt
	compared  bool
}

// filterRound runs the expressions of batch on one mixed traffic, by tcpdump and by the
// native engine at once, and returns the runs with their packets; dropped says a capture
// lost packets (tcpdump's report, the native engine's kernel counter).
func filterRound(t *testing.T, e *native.Engine, p *netnsPair, a6 string, batch []string, refused map[string]bool) (runs []*filterRun, dropped bool) {
	t.Helper()
	for _, f := range batch {
		r := &filterRun{expr: f}
		runs = append(runs, r)
		if out, err := exec.Command("tcpdump", "-d", "-y", "LINUX_SLL2", "--", f).CombinedOutput(); err != nil {
			r.tdRefuse = strings.TrimSpace(string(out))
		} else {
			r.td = startTcpdump(t, p.APath(), 0, f)
		}
		src, err := e.Open(context.Background(), capture.Target{NetNSPath: p.APath()}, capture.SourceOptions{Filter: f})
		switch {
		case err == nil && (r.tdRefuse != "" || refused[f]):
			src.Close()
			t.Errorf("%q: the native engine accepted it (tcpdump: %q)", f, r.tdRefuse)
		case err == nil:
			r.src = src
			r.wait = readInBackground(src)
		case refused[f] && errors.Is(err, native.ErrUntranslatableFilter):
			t.Logf("%q: refused as expected: %v", f, err)
		case r.tdRefuse != "" && !errors.Is(err, native.ErrUntranslatableFilter):
			t.Logf("%q: refused like tcpdump: %v", f, err)
		default:
			t.Errorf("%q: %v", f, err)
		}
	}
	// Only the packets of the traffic are compared: the captures start one after the other
	// and end later, and A and B send neighbour discovery and MLD packets of their own.
	from := time.Now()
	mixedTraffic(t, p, a6)
	to := time.Now()
	for _, r := range runs {
		if r.td == nil {
			continue
		}
		want := r.td.stop(t) // once tcpdump has written the traffic
		dropped = dropped || r.td.dropped
		if r.src == nil {
			continue
		}
		r.src.Stop()
		got, err := r.wait()
		if cerr := r.src.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Errorf("%q: %v", r.expr, err)
			continue
		}
		if st := r.src.Stats(); st.Dropped > 0 {
			t.Logf("%q: the native engine's kernel drops: %d", r.expr, st.Dropped)
			dropped = true
		}
		r.got, r.want, r.compared = within(got, from, to), within(want, from, to), true
	}
	return runs, dropped
}

// addIPv6 gives A and B IPv6 addresses (no duplicate detection: usable at once).
func addIPv6(t *testing.T, p *netnsPair) (a6, b6 string) {
	t.Helper()
	n := strings.Split(p.AIP.String(), ".")[2]
	a6, b6 = "fd00:214:"+n+"::1", "fd00:214:"+n+"::2"
	for _, c := range []struct{ ns, addr string }{{p.A, a6}, {p.B, b6}} {
		out, err := exec.Command("ip", "-n", c.ns, "-o", "link", "show", "type", "veth").Output()
		if err != nil {
			t.Fatal(err)
		}
		dev := strings.TrimSpace(strings.Split(strings.Split(string(out), ":")[1], "@")[0])
		ipCmd(t, "-n", c.ns, "addr", "add", c.addr+"/64", "dev", dev, "nodad")
	}
	return a6, b6
}

// mixedTraffic sends, from B to A: UDP datagrams of many sizes to ports 1000-1009 (some
// fragmented), ICMP echo requests, a TCP connection to a closed port and one to a listener
// that receives data, and IPv6 UDP; one packet at a time. When it returns the captures in A
// have been given all of it (endTraffic).
func mixedTraffic(t *testing.T, p *netnsPair, a6 string) {
	t.Helper()
	udp := udpConnIn(t, p.BPath())
	for i := range 60 {
		payload := make([]byte, 2+i*53%2500)
		payload[0], payload[1] = byte(i>>8), byte(i)
		if _, err := udp.WriteToUDP(payload, &net.UDPAddr{IP: p.AIP, Port: 1000 + i%10}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // paces the traffic; not a wait for an event
	}
	var icmp net.PacketConn
	inNetns(t, p.BPath(), func() (err error) {
		icmp, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	defer icmp.Close()
	for seq := 1; seq <= 5; seq++ {
		msg := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 0x5043, Seq: uint16(seq)}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, msg, gopacket.Payload("podcap")); err != nil {
			t.Fatal(err)
		}
		if _, err := icmp.WriteTo(buf.Bytes(), &net.IPAddr{IP: p.AIP}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // paces the traffic; not a wait for an event
	}
	var ln net.Listener
	inNetns(t, p.APath(), func() (err error) {
		ln, err = net.Listen("tcp4", p.AIP.String()+":8080")
		return err
	})
	defer ln.Close()
	closed := make(chan struct{}) // A has closed its end: its FIN is out
	go func() {
		defer close(closed)
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	inNetns(t, p.BPath(), func() error {
		if c, err := net.DialTimeout("tcp4", p.AIP.String()+":80", time.Second); err == nil {
			c.Close()
			return errors.New("port 80 of A is open")
		}
		c, err := net.DialTimeout("tcp4", p.AIP.String()+":8080", time.Second)
		if err != nil {
			return err
		}
		for i := range 3 {
			if _, err := fmt.Fprintf(c, "podcap %d\n", i); err != nil {
				return err
			}
			// Paces the writes (a segment each, acknowledged apart); not a wait for an
			// event: both captures are given the same segments however they fall.
			time.Sleep(5 * time.Millisecond)
		}
		return c.Close()
	})
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("A did not close the TCP connection within 10s of B's close")
	}
	udp6 := udpConnIn6(t, p.BPath())
	for i := range 10 {
		if _, err := udp6.WriteToUDP(make([]byte, 10+i*300), &net.UDPAddr{IP: net.ParseIP(a6), Port: 2000 + i}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // paces the traffic; not a wait for an event
	}
	endTraffic(t, p, udp)
}

func udpConnIn6(t *testing.T, nsPath string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	inNetns(t, nsPath, func() (err error) {
		c, err = net.ListenUDP("udp6", &net.UDPAddr{})
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}
