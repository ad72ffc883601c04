package capture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/metrics"
)

// runCapture is the goroutine of one capture: wait for the previous capture of the pod to be
// cleaned up, open the ring, then resolve the pod and run the engine until ctx ends,
// restarting with backoff when the process dies and re-attaching when the pod's container
// changes. On the way out it stops the process, closes the ring and, if asked, deletes files.
func (m *Manager) runCapture(ctx context.Context, r *run) {
	log := klog.FromContext(ctx).WithValues("pod", Key(r.spec.Namespace, r.spec.Pod), "uid", r.spec.UID, "source", r.spec.Source)
	ctx, cancel := context.WithCancel(klog.NewContext(ctx, log))
	defer cancel()
	started := false
	defer func() {
		m.cleanup(log, r, started)
		r.hub.end()
		m.finish(r, started)
		close(r.done)
		if r.spec.session() && started {
			m.kickSweep() // now that r no longer counts as live, its files may be evicted
		}
	}()
	if r.prev != nil {
		// Even when stopped meanwhile: whoever replaces r waits for r, and so for prev. Not
		// waiting would let a third capture of the pod start while prev still runs (and prev's
		// cleanup delete its ring). Bounded by prev's stop.
		<-r.prev.done
		if ctx.Err() != nil {
			return
		}
	}
	r.armDeadline(m.cfg.Clock.Now())
	go m.watchDeadline(ctx, r, cancel)
	ring, err := m.openRing(r)
	if err != nil {
		m.failed(r, metrics.FailureFiles, err)
		return // permanent for this spec: a later Ensure with a new spec tries again
	}
	r.mu.Lock()
	r.ring = ring
	r.mu.Unlock()

	backoff := m.cfg.MinBackoff
	for ctx.Err() == nil {
		r.setPhase(PhaseStarting)
		t0 := m.cfg.Clock.Now()
		err := m.attempt(ctx, r, &started)
		if ctx.Err() != nil {
			return
		}
		if m.cfg.Clock.Since(t0) > m.cfg.MaxBackoff {
			backoff = m.cfg.MinBackoff
		}
		if errors.Is(err, errReattach) {
			continue // the pod's container changed: attach again at once
		}
		r.setPhase(PhaseBackoff)
		log.V(2).Info("Capture attempt ended, retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-m.cfg.Clock.After(backoff):
		}
		backoff = min(2*backoff, m.cfg.MaxBackoff)
	}
}

// openRing prepares the capture's directory and files: a manual ring or a flight recorder
// adopts what an earlier agent left (and continues after its newest file); a policy or alert
// capture preserves the pod's flight recorder's files (preserveRecorder) and writes its
// capture.json. Then the capture's reservation makes room among finished captures before
// anything is written.
func (m *Manager) openRing(r *run) (*Ring, error) {
	if err := os.MkdirAll(r.dir, 0o750); err != nil {
		return nil, fmt.Errorf("create capture directory: %w", err)
	}
	base := ringBase(r.spec)
	start := 0
	if !r.spec.session() {
		var err error
		if start, err = adoptRing(r.dir, base, r.spec.Files); err != nil {
			return nil, err
		}
	} else {
		m.preserveRecorder(r)
		if err := writeSessionMeta(r, time.Time{}, ""); err != nil {
			return nil, err
		}
	}
	m.makeRoom()
	ring, err := NewRing(RingOptions{
		Dir: r.dir, Base: base, Files: r.spec.Files, FileSize: r.spec.FileSize, Start: start,
		Clock: m.cfg.Clock, BeforeCreate: m.spaceCheck(r.spec),
		Format: ringFormat(r.spec), Section: ringSection(r.spec, m.cfg.NodeName, m.cfg.Version),
	})
	if err != nil {
		return nil, fmt.Errorf("open ring: %w", err)
	}
	return ring, nil
}

var errReattach = errors.New("pod's container changed")

// attempt resolves the pod and runs one capture process until it ends, ctx ends, or the
// pod's container changed (errReattach).
func (m *Manager) attempt(ctx context.Context, r *run, started *bool) error {
	src, target, err := m.startSource(ctx, r, started)
	if err != nil {
		return err
	}
	result, cerr := m.pumpUntilEnd(ctx, r, src, target)
	if ctx.Err() != nil || errors.Is(result, errReattach) {
		return result
	}
	if ferr := (*FileError)(nil); errors.As(result, &ferr) {
		// the ring could not be written: the capture's storage failed, not its process
		return m.failed(r, metrics.FailureFiles, fileFailure(r.dir, ferr))
	}
	// the process ended on its own: tcpdump died, or the pod's network namespace went away
	if cerr == nil {
		cerr = result
	}
	if cerr == nil {
		cerr = errors.New("capture process exited")
	}
	return m.failed(r, metrics.FailureExited, fmt.Errorf("capture process ended: %w", cerr))
}

// startSource resolves the pod and opens the engine's source in its network namespace; the
// capture is Running when it returns without error.
func (m *Manager) startSource(ctx context.Context, r *run, started *bool) (Source, Target, error) {
	s := r.spec
	target, err := m.cfg.Resolver.Resolve(ctx, s.Namespace, s.Pod, s.UID)
	if err != nil {
		if ctx.Err() != nil {
			return nil, target, err
		}
		return nil, target, m.failed(r, metrics.FailureResolve, fmt.Errorf("find the pod's network namespace: %w", err))
	}
	src, err := m.cfg.Engines[s.Engine].Open(ctx, target, SourceOptions{Snaplen: s.Snaplen, Filter: s.Filter, HostNetwork: s.HostNetwork})
	if err != nil {
		if ctx.Err() != nil {
			return nil, target, err
		}
		return nil, target, m.failed(r, metrics.FailureStart, fmt.Errorf("start capture: %w", err))
	}
	r.mu.Lock()
	r.target, r.src, r.srcDrops = target, src, 0
	if !*started {
		r.started = m.cfg.Clock.Now()
	} else {
		r.restarts++
	}
	r.lastErr = ""
	r.mu.Unlock()
	r.setPhase(PhaseRunning)
	m.cfg.Metrics.CapturesRunning.WithLabelValues(sourceLabel(s)).Inc()
	m.cfg.Metrics.EngineCapturesRunning.WithLabelValues(s.Engine).Inc()
	if !*started {
		*started = true
		m.cfg.Metrics.CaptureStarts.WithLabelValues(sourceLabel(s)).Inc()
		m.cfg.Notifier.Notify(s, EventNormal, ReasonStarted, fmt.Sprintf(
			"capturing in the pod's network namespace (pid %d) with the %s engine into a ring of %d files of %d bytes: %s%s",
			target.PID, s.Engine, s.Files, s.FileSize, r.ring.Pattern(), r.startedBy()))
	} else {
		m.cfg.Metrics.CaptureRestarts.Inc()
		m.cfg.Notifier.Notify(s, EventNormal, ReasonStarted, fmt.Sprintf(
			"capture restarted in the pod's network namespace (pid %d), same ring", target.PID))
	}
	return src, target, nil
}

// pumpUntilEnd pumps src into the ring until the source ends, ctx ends or the pod's
// container changed (errReattach); then it stops the source, lets Pump write what the source
// still holds, and closes it. It returns why the pumping ended and the source's verdict.
func (m *Manager) pumpUntilEnd(ctx context.Context, r *run, src Source, target Target) (result, cerr error) {
	// Pump stops the source when pumpCtx ends and writes what it still holds (bounded).
	pumpCtx, stopPump := context.WithCancel(ctx)
	pumped := make(chan error, 1)
	r.hub.setFormat(src.LinkType(), src.Snaplen())
	go func() {
		_, err := Pump(pumpCtx, src, r.ring, PumpOptions{Clock: m.cfg.Clock, Tap: r.hub.tap, FirstPacket: m.firstPacket(r)})
		pumped <- err
	}()
	recheck := m.cfg.Clock.NewTicker(m.cfg.RecheckInterval)
	defer recheck.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			result = ctx.Err()
			break loop
		case perr := <-pumped:
			pumped = nil
			result = perr
			break loop
		case <-r.recheck:
		case <-recheck.C():
		}
		if moved(ctx, m.cfg.Resolver, r.spec, target) {
			result = errReattach
			break loop
		}
	}
	stopPump()
	if pumped != nil {
		<-pumped
	}
	cerr = src.Close() // after Pump: closing first would discard what it has not written
	m.cfg.Metrics.CapturesRunning.WithLabelValues(sourceLabel(r.spec)).Dec()
	m.cfg.Metrics.EngineCapturesRunning.WithLabelValues(r.spec.Engine).Dec()
	r.mu.Lock()
	r.takeDropsLocked(m.cfg.Metrics, src.Stats().Dropped)
	r.drops += r.srcDrops
	r.srcDrops = 0
	r.src = nil
	r.mu.Unlock()
	return result, cerr
}

// fileFailure says what a ring's write error means for the people reading the Event.
func fileFailure(dir string, err *FileError) error {
	switch {
	case errors.Is(err, ErrLowDiskSpace):
		return fmt.Errorf("capture stopped writing: %w", err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("the disk is full: cannot write the capture files in %s: %w", dir, err)
	default:
		return fmt.Errorf("cannot write the capture files in %s: %w", dir, err)
	}
}

// moved reports whether the pod now runs in another process than target (its container
// restarted). A pod that cannot be resolved right now (container restarting) has not moved:
// the capture keeps its network namespace open meanwhile.
func moved(ctx context.Context, res Resolver, s Spec, target Target) bool {
	t, err := res.Resolve(ctx, s.Namespace, s.Pod, s.UID)
	if err != nil {
		return false
	}
	return t.PID != target.PID || t.SandboxID != target.SandboxID
}

// failed records a failed attempt: metric, last error, Warning Event. It returns err.
func (m *Manager) failed(r *run, reason string, err error) error {
	m.cfg.Metrics.CaptureFailures.WithLabelValues(reason).Inc()
	r.fail(err)
	m.cfg.Notifier.Notify(r.spec, EventWarning, ReasonFailed, err.Error())
	return err
}

func (m *Manager) cleanup(log klog.Logger, r *run, started bool) {
	r.mu.Lock()
	ring := r.ring
	r.mu.Unlock()
	if ring != nil {
		if err := ring.Close(); err != nil {
			log.Error(err, "Closing capture ring")
		}
	}
	r.finalStats(m.cfg.Metrics)
	m.releaseSeries(r)
	requested, expired := r.ended()
	r.mu.Lock()
	maxDuration, grace := r.maxDuration, r.stopGrace
	graceEnded := !r.graceUntil.IsZero() && !m.cfg.Clock.Now().Before(r.graceUntil)
	r.mu.Unlock()
	manual, recorder := r.spec.Source == SourceManual, r.spec.Source == SourceRecorder
	deleteFiles := (manual || recorder) && requested
	var why string
	switch {
	case expired:
		why = fmt.Sprintf("max_duration %s reached", maxDuration)
	case requested && manual:
		why = "annotation removed or pod gone"
	case requested && recorder:
		why = "flight recorder no longer decided, or pod gone"
	case requested && graceEnded:
		why = fmt.Sprintf("no longer decided, after its stop grace of %s", grace)
	case requested:
		why = "no longer decided"
	default:
		why = "agent stopping"
	}
	switch {
	case deleteFiles && manual:
		m.removeManualRing(r.dir, r.spec.Pod, r)
	case deleteFiles:
		m.removeRecorder(r.dir, r)
	}
	switch {
	case r.spec.session() && started:
		if err := writeSessionMeta(r, m.cfg.Clock.Now(), why); err != nil {
			log.Error(err, "Writing capture metadata")
		}
	case r.spec.session():
		// stopped before its process ever ran: nothing was captured, and a directory holding
		// only the capture.json of its start would be left for retention to find
		if err := os.RemoveAll(r.dir); err != nil {
			log.Error(err, "Removing the directory of a capture that never started", "dir", r.dir)
		}
		m.pruneDirs(filepath.Dir(r.dir), r)
	}
	if started && (requested || expired) {
		msg := fmt.Sprintf("capture stopped (%s); files kept in %s", why, r.dir)
		if deleteFiles {
			msg = "capture stopped and its files deleted"
		}
		m.cfg.Notifier.Notify(r.spec, EventNormal, ReasonStopped, msg)
	}
	log.V(1).Info("Capture ended", "why", why, "deletedFiles", deleteFiles)
}
