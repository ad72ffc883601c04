package capture

// Subscribe adds a live reader of the pod's running capture, or of its flight recorder when
// the pod has no other capture: a pcap stream of the packets captured from now on (see
// hub). It refuses a capture that is not running (queued, expired or unknown:
// ErrCaptureNotRunning) and a reader over the bounds (ErrCaptureStreams, ErrNodeStreams).
func (m *Manager) Subscribe(namespace, pod string) (*Subscription, error) {
	m.mu.Lock()
	r := m.runs[Key(namespace, pod)]
	if r == nil {
		r = m.runs[recorderSlot(namespace, pod)]
	}
	m.mu.Unlock()
	if r == nil {
		return nil, ErrCaptureNotRunning
	}
	switch r.getPhase() {
	case PhaseQueued, PhaseExpired, PhaseStopped:
		// no goroutine would end the stream (queued), or it is gone
		return nil, ErrCaptureNotRunning
	}
	return r.hub.subscribe()
}
