package tcpdump

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/podcap/podcap/agent/capture"
)

// counters are tcpdump's kernel counters as last printed; updated by the stderr reader and
// read by Stats without a lock.
type counters struct {
	captured, received, dropped, ifDropped atomic.Uint64
}

func (c *counters) stats() capture.Stats {
	return capture.Stats{
		Captured:  c.captured.Load(),
		Received:  c.received.Load(),
		Dropped:   c.dropped.Load(),
		IfDropped: c.ifDropped.Load(),
	}
}

// parseCounters reads tcpdump's counter lines into c and reports whether line was one.
// tcpdump prints them one per line at exit:
//
//	12 packets captured
//	14 packets received by filter
//	0 packets dropped by kernel
//	3 packets dropped by interface    (only when not 0)
//
// and on one line, after its name, on SIGUSR1:
//
//	tcpdump: 12 packets captured, 14 packets received by filter, 0 packets dropped by kernel
//
// A count of one is "1 packet ...".
func parseCounters(line string, c *counters) bool {
	line = strings.TrimSpace(line)
	if name, rest, ok := strings.Cut(line, ": "); ok && !strings.Contains(name, " ") {
		line = rest // "tcpdump: ..."
	}
	parts := strings.Split(line, ", ")
	type kv struct {
		dst *atomic.Uint64
		n   uint64
	}
	var vals []kv
	for _, p := range parts {
		num, what, ok := strings.Cut(p, " ")
		if !ok {
			return false
		}
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return false
		}
		what, ok = strings.CutPrefix(what, "packets ")
		if !ok {
			if what, ok = strings.CutPrefix(what, "packet "); !ok {
				return false
			}
		}
		var dst *atomic.Uint64
		switch what {
		case "captured":
			dst = &c.captured
		case "received by filter":
			dst = &c.received
		case "dropped by kernel":
			dst = &c.dropped
		case "dropped by interface":
			dst = &c.ifDropped
		default:
			return false
		}
		vals = append(vals, kv{dst, n})
	}
	for _, v := range vals {
		v.dst.Store(v.n)
	}
	return true
}

// maxTail is how much of tcpdump's other stderr output is kept for error messages.
const maxTail = 4096

// tail keeps the last maxTail bytes of lines.
type tail struct {
	// mu protects the fields below.
	mu    sync.Mutex
	lines []string
	size  int
}

func (t *tail) add(line string) {
	if len(line) > maxTail {
		line = line[len(line)-maxTail:]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	t.size += len(line)
	for t.size > maxTail {
		t.size -= len(t.lines[0])
		t.lines = t.lines[1:]
	}
}

// String returns the kept lines joined by "; ".
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "; ")
}
