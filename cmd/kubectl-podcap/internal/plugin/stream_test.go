package plugin

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
)

// endlessStream makes the fake agent stream a pcap header and then a packet every few
// milliseconds until the client goes away; served tells when it noticed.
func endlessStream(t *testing.T, a *fakeAgent) (served chan struct{}) {
	served = make(chan struct{})
	head := pcapFile(t, layers.LinkTypeLinuxSLL2, false, nil)
	pkt := pcapFile(t, layers.LinkTypeLinuxSLL2, false, map[byte]time.Duration{7: 0}, 7)[24:]
	a.stream = func(w http.ResponseWriter, r *http.Request) {
		defer close(served)
		w.Header().Set("Content-Type", "application/vnd.tcpdump.pcap")
		_, _ = w.Write(head)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
				if _, err := w.Write(pkt); err != nil {
					return
				}
			}
		}
	}
	return served
}

// brokenPipe accepts limit bytes, then fails like a write to a closed pipe.
type brokenPipe struct {
	mu    sync.Mutex // protects n
	n     int
	limit int
}

func (b *brokenPipe) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n >= b.limit {
		return 0, fmt.Errorf("write /dev/stdout: %w", syscall.EPIPE)
	}
	b.n += len(p)
	return len(p), nil
}

func TestStreamEndsOnEPIPE(t *testing.T) {
	te := getEnv(t)
	served := endlessStream(t, te.agents["n2"])
	env := te.env(t)
	w := &brokenPipe{limit: 24 + 5*17}
	if err := env.stream(t.Context(), "shop", "web", w); err != nil {
		t.Fatalf("stream after the reader went away: %v, want a clean end", err)
	}
	<-served // the agent saw the client go away: the tunnel was closed
	if w.n < w.limit {
		t.Errorf("%d bytes written before the pipe broke, want %d", w.n, w.limit)
	}
}

func TestStreamEndsOnInterrupt(t *testing.T) {
	te := getEnv(t)
	served := endlessStream(t, te.agents["n2"])
	ctx, cancel := context.WithCancel(t.Context())
	w := &cancelAfter{limit: 200, cancel: cancel}
	if err := te.env(t).stream(ctx, "shop", "web", w); err != nil {
		t.Fatalf("stream after SIGINT: %v, want a clean end", err)
	}
	<-served
	if !strings.HasPrefix(w.b.String(), string(pcapFile(t, layers.LinkTypeLinuxSLL2, false, nil))) {
		t.Error("the stream does not start with the pcap header")
	}
}

// cancelAfter keeps what it is written and cancels (as SIGINT does) after limit bytes.
type cancelAfter struct {
	b      strings.Builder
	limit  int
	cancel func()
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.b.Write(p)
	if c.b.Len() >= c.limit {
		c.cancel()
	}
	return len(p), nil
}

func TestStreamNoCapture(t *testing.T) {
	te := getEnv(t) // no stream handler: 404
	err := te.run(t, "stream", "web")
	if err == nil || !strings.Contains(err.Error(), "stream of shop/web: not found on the podcap agent on node n2 (404") {
		t.Errorf("err %v", err)
	}
}
