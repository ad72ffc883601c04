package capture

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/metrics"
)

// The end of a non-manual capture: its stop grace (it runs on for a while after it is no
// longer desired) and its cooldown (no non-manual capture of the pod starts for a while after
// it ended).

// ErrCoolingDown: the pod's last policy or alert capture ended less than its cooldown ago.
// Ensure returns it as a *CoolingDownError, which says until when.
var ErrCoolingDown = errors.New("the pod's last capture ended less than its cooldown ago")

// CoolingDownError is Ensure's refusal of a non-manual capture during the pod's cooldown.
type CoolingDownError struct {
	Ended time.Time // when the pod's last capture ended
	Until time.Time // when a capture may start again
}

func (e *CoolingDownError) Error() string {
	return fmt.Sprintf("%v: no policy or alert capture starts before %s", ErrCoolingDown, e.Until.UTC().Format(time.RFC3339))
}

func (e *CoolingDownError) Unwrap() error { return ErrCoolingDown }

// cooldown is a pod's cooldown after its last non-manual capture ended.
type cooldown struct {
	uid      string
	ended    time.Time
	until    time.Time
	waiting  bool // a capture is desired and held back: counted in podcap_captures_queued
	notified bool // its CaptureCoolingDown Event went out (one per cooldown)
}

// StopAfterGrace ends the pod's capture like Stop, except that a started policy or alert
// capture of the pod uid whose latest Spec asked for a StopGrace runs on until that long
// after the first call (a CaptureStopping Event says when): an Ensure of the same capture
// before then continues it as if nothing happened. Calling it again during the grace does
// not extend it. Use Stop when the pod is gone: it ends the capture at once.
func (m *Manager) StopAfterGrace(namespace, pod, uid string) {
	key := Key(namespace, pod)
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	if c := m.cooldowns[key]; c != nil && c.waiting {
		c.waiting = false // nothing is desired any more
		m.cooldownChangedLocked(now)
	}
	r := m.runs[key]
	if r == nil || !r.graceful(uid) {
		m.mu.Unlock()
		m.stop(namespace, pod, false)
		return
	}
	until, began := r.beginGrace(now)
	m.mu.Unlock()
	if began {
		klog.Background().Info("Capture no longer decided, stopping after its grace", "pod", key, "stopGrace", until.Sub(now), "stopsAt", until)
		m.cfg.Notifier.Notify(r.spec, EventNormal, ReasonStopping, fmt.Sprintf(
			"no longer decided: the capture goes on for its stop grace of %s and stops at %s unless decided again",
			until.Sub(now), until.UTC().Format(time.RFC3339)))
	}
}

// endGrace stops r, whose stop grace (or max_duration, during it) ended, as Stop would.
func (m *Manager) endGrace(r *run) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.runs[r.spec.slot()] == r {
		m.endLocked(r)
	}
}

// endLocked stops r because it is no longer desired (not replaced by another capture of the
// pod): its cooldown applies once it ended.
func (m *Manager) endLocked(r *run) Phase {
	r.mu.Lock()
	r.coolAfter = true
	r.mu.Unlock()
	return m.stopLocked(r)
}

// startCooldownLocked remembers the cooldown of r, a capture that just ended, if it asks for
// one: it ran (non-manual), and ended because it was no longer desired or reached its
// max_duration, not because it was replaced or the agent stops.
func (m *Manager) startCooldownLocked(r *run, started bool, now time.Time) {
	r.mu.Lock()
	cool, d := r.coolAfter || r.expired, r.cooldown
	r.mu.Unlock()
	if !started || !cool || d <= 0 || !r.spec.session() || m.ctx.Err() != nil {
		return
	}
	m.cooldowns[Key(r.spec.Namespace, r.spec.Pod)] = &cooldown{uid: r.spec.UID, ended: now, until: now.Add(d)}
	m.cooldownChangedLocked(now)
}

// coolingLocked checks whether spec, a non-manual capture that is not running, must wait for
// the pod's cooldown. It returns the refusal, and whether it is the first of this cooldown
// (the caller sends the Event then).
func (m *Manager) coolingLocked(spec Spec, now time.Time) (err *CoolingDownError, first bool) {
	key := Key(spec.Namespace, spec.Pod)
	c := m.cooldowns[key]
	if c == nil {
		return nil, false
	}
	if c.uid != spec.UID || !now.Before(c.until) { // another pod of that name, or over
		delete(m.cooldowns, key)
		m.cooldownChangedLocked(now)
		return nil, false
	}
	first = !c.notified
	c.notified, c.waiting = true, true
	m.cooldownChangedLocked(now)
	return &CoolingDownError{Ended: c.ended, Until: c.until}, first
}

// forgetCooldownLocked forgets the cooldown of a pod that is gone.
func (m *Manager) forgetCooldownLocked(key string, now time.Time) {
	if _, ok := m.cooldowns[key]; ok {
		delete(m.cooldowns, key)
		m.cooldownChangedLocked(now)
	}
}

// pruneCooldowns forgets the cooldowns that are over (Run calls it now and then), so that
// what the manager remembers is bounded by the pods that ended a capture recently.
func (m *Manager) pruneCooldowns() {
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, c := range m.cooldowns {
		if !now.Before(c.until) {
			delete(m.cooldowns, key)
		}
	}
	m.cooldownChangedLocked(now)
}

// cooldownChangedLocked sets podcap_captures_queued{reason="cooldown"}: the pods whose
// desired capture waits for its cooldown.
func (m *Manager) cooldownChangedLocked(now time.Time) {
	n := 0
	for _, c := range m.cooldowns {
		if c.waiting && now.Before(c.until) {
			n++
		}
	}
	m.cfg.Metrics.CapturesQueued.WithLabelValues(metrics.QueuedCooldown).Set(float64(n))
}

func coolingMessage(e *CoolingDownError) string {
	return fmt.Sprintf("capture waits: the pod's last policy or alert capture ended at %s and its cooldown of %s lasts until %s; it starts then if still decided",
		e.Ended.UTC().Format(time.RFC3339), e.Until.Sub(e.Ended), e.Until.UTC().Format(time.RFC3339))
}
