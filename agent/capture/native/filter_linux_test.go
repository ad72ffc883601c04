package native_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
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
	a6, b6 := addIPv6(t, p)
	a, b := p.aIP.String(), p.bIP.String()
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
	type run struct {
		expr     string
		td       *tcpdumpCapture
		src      capture.Source
		wait     func() ([]pkt, error)
		tdRefuse string
	}
	var runs []*run
	for _, f := range filters {
		r := &run{expr: f}
		runs = append(runs, r)
		if out, err := exec.Command("tcpdump", "-d", "-y", "LINUX_SLL2", "--", f).CombinedOutput(); err != nil {
			r.tdRefuse = strings.TrimSpace(string(out))
		} else {
			r.td = startTcpdump(t, p.aPath(), 0, f)
		}
		src, err := e.Open(context.Background(), capture.Target{NetNSPath: p.aPath()}, capture.SourceOptions{Filter: f})
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
	time.Sleep(200 * time.Millisecond)
	compared, total := 0, 0
	for _, r := range runs {
		if r.td == nil {
			continue
		}
		want := r.td.stop(t)
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
		got, want = within(got, from, to), within(want, from, to)
		t.Run(r.expr, func(t *testing.T) {
			comparePackets(t, got, want)
			t.Logf("%d packets", len(want))
		})
		compared++
		total += len(want)
	}
	t.Logf("%d expressions compared over %d packets of the traffic (tcpdump's), %d refused by the native engine, %d by tcpdump", compared, total, len(refused), len(filters)-compared-len(refused))
	_ = b6
}

// addIPv6 gives A and B IPv6 addresses (no duplicate detection: usable at once).
func addIPv6(t *testing.T, p *netnsPair) (a6, b6 string) {
	t.Helper()
	n := strings.Split(p.aIP.String(), ".")[2]
	a6, b6 = "fd00:214:"+n+"::1", "fd00:214:"+n+"::2"
	for _, c := range []struct{ ns, addr string }{{p.a, a6}, {p.b, b6}} {
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
// that receives data, and IPv6 UDP; one packet at a time.
func mixedTraffic(t *testing.T, p *netnsPair, a6 string) {
	t.Helper()
	udp := udpConnIn(t, p.bPath())
	for i := range 60 {
		payload := make([]byte, 2+i*53%2500)
		payload[0], payload[1] = byte(i>>8), byte(i)
		if _, err := udp.WriteToUDP(payload, &net.UDPAddr{IP: p.aIP, Port: 1000 + i%10}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	var icmp net.PacketConn
	inNetns(t, p.bPath(), func() (err error) {
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
		if _, err := icmp.WriteTo(buf.Bytes(), &net.IPAddr{IP: p.aIP}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var ln net.Listener
	inNetns(t, p.aPath(), func() (err error) {
		ln, err = net.Listen("tcp4", p.aIP.String()+":8080")
		return err
	})
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	inNetns(t, p.bPath(), func() error {
		if c, err := net.DialTimeout("tcp4", p.aIP.String()+":80", time.Second); err == nil {
			c.Close()
			return errors.New("port 80 of A is open")
		}
		c, err := net.DialTimeout("tcp4", p.aIP.String()+":8080", time.Second)
		if err != nil {
			return err
		}
		for i := range 3 {
			if _, err := fmt.Fprintf(c, "podcap %d\n", i); err != nil {
				return err
			}
			time.Sleep(5 * time.Millisecond)
		}
		return c.Close()
	})
	udp6 := udpConnIn6(t, p.bPath())
	for i := range 10 {
		if _, err := udp6.WriteToUDP(make([]byte, 10+i*300), &net.UDPAddr{IP: net.ParseIP(a6), Port: 2000 + i}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
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
