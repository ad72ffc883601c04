package capture

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/metrics"
)

// The node's disk budget (see Manager.Ensure): who may start now, the queue of those who
// wait, room made among finished captures, the free-space floor, and what the files hold.

// waitReasonLocked says what r waits for before it may start ("": nothing).
func (m *Manager) waitReasonLocked(r *run) string {
	switch {
	case m.active >= m.cfg.MaxConcurrent:
		return metrics.QueuedConcurrency
	case m.reserved+r.reserve > m.cfg.Retention.MaxBytes:
		return metrics.QueuedBudget
	case r.nativeRing > 0 && m.rings+r.nativeRing > m.cfg.NativeRingBudget:
		return metrics.QueuedNativeBuffer
	}
	return ""
}

func (m *Manager) queuedMessage(why string, need int64) string {
	switch why {
	case metrics.QueuedConcurrency:
		return fmt.Sprintf("capture waits: the node already runs its maximum of %d concurrent captures (--max-concurrent-captures); it starts when one ends", m.cfg.MaxConcurrent)
	case metrics.QueuedNativeBuffer:
		return fmt.Sprintf("capture waits: its native engine's kernel ring of %d bytes (--native-buffer-bytes) does not fit beside the rings of the native captures running on the node, under their budget of %d bytes (--native-buffer-budget); it starts when one ends",
			m.cfg.NativeRingBytes, m.cfg.NativeRingBudget)
	}
	return fmt.Sprintf("capture waits: it may write up to %d bytes and the captures running on the node have reserved too much of its budget of %d bytes (--retention-max-bytes); it starts when one ends",
		need, m.cfg.Retention.MaxBytes)
}

// queueChangedLocked sets podcap_captures_queued from the queue: each queued capture counts
// under the first thing it waits for (a capture startQueuedLocked is about to start counts
// under none).
func (m *Manager) queueChangedLocked() {
	n := map[string]int{}
	for _, r := range m.queue {
		if why := m.waitReasonLocked(r); why != "" {
			n[why]++
		}
	}
	for _, why := range []string{metrics.QueuedConcurrency, metrics.QueuedBudget, metrics.QueuedNativeBuffer} {
		m.cfg.Metrics.CapturesQueued.WithLabelValues(why).Set(float64(n[why]))
	}
}

func (m *Manager) dequeueLocked(r *run) {
	for i, q := range m.queue {
		if q == r {
			m.queue = append(m.queue[:i], m.queue[i+1:]...)
			break
		}
	}
	m.queueChangedLocked()
}

// startQueuedLocked starts the queued captures that fit now, oldest first; one that waits for
// room does not hold back a smaller one behind it.
func (m *Manager) startQueuedLocked() {
	for _, r := range slices.Clone(m.queue) {
		if m.waitReasonLocked(r) == "" {
			m.dequeueLocked(r)
			m.startLocked(r)
		}
	}
	m.queueChangedLocked()
}

// makeRoom evicts finished captures until the live captures' reservations and the other
// files fit the byte budget; a capture calls it before it writes.
func (m *Manager) makeRoom() {
	m.mu.Lock()
	over := m.kept+m.reserved > m.cfg.Retention.MaxBytes
	m.mu.Unlock()
	if over {
		m.sweep()
	}
}

// spaceCheck returns the ring's BeforeCreate check: the file system of the capture directory
// must keep MinFreeBytes free after the ring file s may write next.
func (m *Manager) spaceCheck(s Spec) func() error {
	need := WorstCaseBytes(1, s.fileSize(), s.snaplen())
	return func() error {
		var st unix.Statfs_t
		if err := unix.Statfs(m.cfg.Dir, &st); err != nil {
			return fmt.Errorf("free space of %s: %w", m.cfg.Dir, err)
		}
		free := int64(st.Bavail) * int64(st.Bsize) // Bsize is int64 on Linux, uint32 on BSDs
		if free-need < m.cfg.MinFreeBytes {
			klog.Background().WithName("retention").Info("Not creating a capture file: free disk space under the floor",
				"pod", Key(s.Namespace, s.Pod), "free", free, "fileMayNeed", need, "minFreeBytes", m.cfg.MinFreeBytes)
			return fmt.Errorf("%w: %s would have less than %d bytes free (--min-free-bytes) once a ring file of up to %d bytes is written",
				ErrLowDiskSpace, m.cfg.Dir, m.cfg.MinFreeBytes, need)
		}
		return nil
	}
}

// fileBytes is what the capture files hold now: the live captures' rings as written, the
// rest as of the last sweep (podcap_capture_file_bytes).
func (m *Manager) fileBytes() int64 {
	m.mu.Lock()
	total := m.kept
	var rs []*run
	for _, r := range m.runs {
		rs = append(rs, r)
	}
	for _, r := range m.stopping {
		rs = append(rs, r)
	}
	m.mu.Unlock()
	for _, r := range rs {
		r.mu.Lock()
		if r.ring != nil && !r.statsDone {
			total += r.ring.DiskBytes() + r.preBytes
		}
		r.mu.Unlock()
	}
	return total
}
