package native_test

import (
	"context"
	"net"
	"testing"

	"github.com/podcap/podcap/agent/capture"
)

// BenchmarkReadPacket measures the reader on small UDP datagrams sent between two namespaces
// as fast as one sender goes: b.N datagrams, each read (LINUX_SLL2 header built, packet
// copied). The kernel's drops are reported; they are the reader falling behind.
func BenchmarkReadPacket(b *testing.B) {
	needRoot(b)
	e := newEngine(b)
	p := newNetnsPair(b)
	src := open(b, e, context.Background(), p.APath(), capture.SourceOptions{Filter: "udp and src host " + p.BIP.String()})
	c := udpConnIn(b, p.BPath())
	payload := make([]byte, 64-28) // 64-byte IP packets
	dst := &net.UDPAddr{IP: p.AIP, Port: 9}
	sent := make(chan error, 1)
	b.ResetTimer()
	go func() {
		for range b.N {
			if _, err := c.WriteToUDP(payload, dst); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
		src.Stop()
	}()
	var read int
	for {
		_, _, err := src.ReadPacket()
		if err != nil {
			break
		}
		read++
	}
	b.StopTimer()
	if err := <-sent; err != nil {
		b.Fatal(err)
	}
	if err := src.Close(); err != nil {
		b.Fatal(err)
	}
	st := src.Stats()
	b.ReportMetric(float64(st.Dropped)/float64(b.N)*100, "%dropped")
	if uint64(read)+st.Dropped != uint64(b.N) {
		b.Logf("sent %d, read %d, kernel drops %d", b.N, read, st.Dropped)
	}
}
