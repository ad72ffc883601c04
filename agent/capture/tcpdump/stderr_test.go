package tcpdump

import (
	"strings"
	"testing"

	"github.com/podcap/podcap/agent/capture"
)

func TestParseCounters(t *testing.T) {
	var c counters
	for _, line := range []string{
		"tcpdump: 5 packets captured, 7 packets received by filter, 1 packet dropped by kernel",
		"12 packets captured",
		"1 packet received by filter",
		"3 packets dropped by kernel",
		"2 packets dropped by interface",
	} {
		if !parseCounters(line, &c) {
			t.Errorf("parseCounters(%q) = false", line)
		}
	}
	if got, want := c.stats(), (capture.Stats{Captured: 12, Received: 1, Dropped: 3, IfDropped: 2}); got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
	if !parseCounters("tcpdump: 9 packets captured, 10 packets received by filter, 0 packets dropped by kernel, 4 packets dropped by interface", &c) {
		t.Fatal("one-line counters with interface drops not parsed")
	}
	if got, want := c.stats(), (capture.Stats{Captured: 9, Received: 10, Dropped: 0, IfDropped: 4}); got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
	for _, line := range []string{
		"tcpdump: listening on any, link-type LINUX_SLL2 (Linux cooked v2), snapshot length 262144 bytes",
		"tcpdump: can't parse filter expression: syntax error",
		"nsenter: cannot open /proc/1/ns/net: No such file or directory",
		"tcpdump: 5 packets captured, something else",
		"5 packets",
		"",
	} {
		before := c.stats()
		if parseCounters(line, &c) {
			t.Errorf("parseCounters(%q) = true", line)
		}
		if c.stats() != before {
			t.Errorf("parseCounters(%q) changed the counters", line)
		}
	}
}

func TestTail(t *testing.T) {
	var tl tail
	tl.add("first")
	for range 100 {
		tl.add(strings.Repeat("x", 100))
	}
	tl.add("last")
	s := tl.String()
	if strings.Contains(s, "first") || !strings.HasSuffix(s, "; last") || tl.size > maxTail {
		t.Errorf("tail of %d bytes, kept %d: %.40q…", len(s), tl.size, s)
	}
	tl.add(strings.Repeat("y", 2*maxTail))
	if tl.size != maxTail {
		t.Errorf("one long line: kept %d bytes, want %d", tl.size, maxTail)
	}
}
