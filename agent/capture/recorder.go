package capture

import (
	"errors"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"
)

// The flight recorder (SourceRecorder): its slot beside the pod's capture, its end (files
// deleted), and the files it hands to a policy or alert capture that starts beside it
// (pre-trigger/). Also the per-pod metric series the two slots share.

// StopRecorder ends the pod's flight recorder at once, if any, and deletes its files (the
// recorder's directory). A pod without one loses the recorder files an earlier agent left:
// the agent calls it for every pod that should have none, so a restarted agent reconciles.
func (m *Manager) StopRecorder(namespace, pod string) {
	key := recorderSlot(namespace, pod)
	m.mu.Lock()
	r := m.runs[key]
	neverStarted := r != nil && m.stopLocked(r) == PhaseQueued
	busy := m.stopping[key] != nil
	m.mu.Unlock()
	if (r == nil || neverStarted) && !busy {
		if dir, err := m.podDir(namespace, pod); err == nil {
			m.removeRecorder(filepath.Join(dir, RecorderDir), nil)
		}
	}
}

// removeRecorder deletes a flight recorder's directory, then the pod's and the namespace's
// directories if that left them empty. self is the recorder whose cleanup this is, if any.
func (m *Manager) removeRecorder(dir string, self *run) {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return // the common case: a pod that never had a recorder
	}
	if err := os.RemoveAll(dir); err != nil {
		klog.Background().Error(err, "Removing flight recorder files", "dir", dir)
	}
	m.pruneDirs(filepath.Dir(dir), self)
}

// releaseSeries deletes the pod's per-capture metric series when r, which has pushed its last
// counters, was the last started capture of the pod (its capture and its flight recorder
// share them).
func (m *Manager) releaseSeries(r *run) {
	key := Key(r.spec.Namespace, r.spec.Pod)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.series[key]--; m.series[key] > 0 {
		return
	}
	delete(m.series, key)
	m.cfg.Metrics.ForgetCapture(r.spec.Namespace, r.spec.Pod)
}

// preserveRecorder hard-links the files of the pod's flight recorder, as they are when the
// policy or alert capture r starts, into r's pre-trigger/ directory (Ring.Preserve: no copy,
// the recorder moves on to a fresh file and keeps running), so that the capture's evidence
// covers the minutes before its trigger. Only when Ensure reserved room for them
// (r.preReserve); the reservation then shrinks to what was linked. Best effort: a capture
// without its pre-trigger files is still the capture, so failures are logged, not fatal.
func (m *Manager) preserveRecorder(r *run) {
	if r.preReserve == 0 {
		return
	}
	log := klog.Background().WithValues("pod", Key(r.spec.Namespace, r.spec.Pod))
	m.mu.Lock()
	rec := m.runs[recorderSlot(r.spec.Namespace, r.spec.Pod)]
	m.mu.Unlock()
	var ring *Ring
	if rec != nil && rec.spec.UID == r.spec.UID {
		rec.mu.Lock()
		ring = rec.ring
		rec.mu.Unlock()
	}
	var names []string
	var size int64
	if ring != nil {
		dir := filepath.Join(r.dir, PreTriggerDir)
		if err := os.Mkdir(dir, 0o750); err != nil {
			log.Error(err, "Creating the pre-trigger directory")
		} else {
			var err error
			if names, size, err = ring.Preserve(dir); err != nil {
				log.Error(err, "Preserving the flight recorder's files", "linked", names)
			}
			if len(names) == 0 {
				_ = os.Remove(dir)
			}
		}
	}
	m.mu.Lock()
	// what is linked stays reserved until r ends (its files are r's then); the rest is free
	free := r.preReserve - min(size, r.preReserve)
	r.reserve -= free
	m.reserved -= free
	if free > 0 && m.ctx.Err() == nil {
		m.startQueuedLocked()
	}
	m.mu.Unlock()
	r.mu.Lock()
	r.preBytes = size
	for _, n := range names {
		r.preTrigger = append(r.preTrigger, PreTriggerDir+"/"+n)
	}
	r.mu.Unlock()
	if len(names) > 0 {
		log.V(1).Info("Preserved the flight recorder's files", "dir", filepath.Join(r.dir, PreTriggerDir), "files", names, "bytes", size)
	}
}
