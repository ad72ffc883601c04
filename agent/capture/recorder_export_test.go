package capture

// Reserved is the bytes the running captures hold against the node's byte budget.
func (m *Manager) Reserved() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reserved
}

// WorstCase is what the capture reserves when it starts.
func (s Spec) WorstCase() int64 { return s.worstCase() }
