package capture

import "time"

// Status is what the agent reports about one capture.
type Status struct {
	Spec        Spec
	Phase       Phase
	Dir         string
	PID         int
	Started     time.Time // first time the capture process ran
	StopsAt     time.Time // when a capture in its stop grace stops; zero otherwise
	Packets     uint64
	Bytes       uint64 // captured bytes of those packets (no pcap headers)
	DiskBytes   int64  // what the capture's ring files hold now
	KernelDrops uint64
	Restarts    int
	LastError   string
}

// Status reports the desired capture of a pod, if there is one.
func (m *Manager) Status(namespace, pod string) (Status, bool) {
	m.mu.Lock()
	r := m.runs[Key(namespace, pod)]
	m.mu.Unlock()
	if r == nil {
		return Status{}, false
	}
	return r.status(), true
}

// List reports every desired capture, flight recorders included.
func (m *Manager) List() []Status {
	m.mu.Lock()
	rs := make([]*run, 0, len(m.runs))
	for _, r := range m.runs {
		rs = append(rs, r)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.status())
	}
	return out
}

// RecorderStatus reports the pod's flight recorder, if it has one.
func (m *Manager) RecorderStatus(namespace, pod string) (Status, bool) {
	m.mu.Lock()
	r := m.runs[recorderSlot(namespace, pod)]
	m.mu.Unlock()
	if r == nil {
		return Status{}, false
	}
	return r.status(), true
}
