package capture

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/podcap/podcap/agent/metrics"
)

// Phase is where a capture is in its life.
type Phase string

// The phases of a capture.
const (
	PhaseQueued   Phase = "Queued"   // waiting for a slot, room under the byte budget or the native ring budget
	PhaseStarting Phase = "Starting" // resolving the pod's network namespace, starting the process
	PhaseRunning  Phase = "Running"  // packets flow to the ring
	PhaseBackoff  Phase = "Backoff"  // the last attempt failed; retrying after a delay
	PhaseStopping Phase = "Stopping" // asked to stop; the process is being stopped
	PhaseStopped  Phase = "Stopped"
	PhaseExpired  Phase = "Expired" // ran for its MaxDuration; not restarted for the same spec
)

// run is one desired capture and the goroutine that keeps it going.
type run struct {
	spec    Spec
	dir     string
	prev    *run  // the capture of the same pod being stopped; we start after it
	reserve int64 // the ring's worst case, reserved against the node's byte budget (Manager.mu)
	// nativeRing is the kernel ring of a native capture, reserved under the node's ring
	// budget (Config.NativeRingBudget) while it holds a slot; 0 for other engines. Set
	// before the goroutine starts.
	nativeRing int64
	// preReserve is the part of reserve held for the flight recorder's files a policy or
	// alert capture links into its pre-trigger/ directory (the recorder's worst case when
	// Ensure saw one; 0: nothing is linked). Set before the goroutine starts.
	preReserve int64
	requested  time.Time     // when Ensure asked for it (podcap_capture_first_packet_seconds)
	firstSeen  atomic.Bool   // its first packet was written (measured once per capture)
	hub        *hub          // live stream readers; set before the goroutine starts
	done       chan struct{} // closed when the goroutine has cleaned up
	recheck    chan struct{} // poked by Ensure: check that the capture follows the pod's container
	cancel     context.CancelFunc

	mu sync.Mutex
	// mu protects the fields below. Lock order: the Manager's mu, then a run's mu.
	phase         Phase
	stopRequested bool // the capture is no longer desired (Stop, or replaced)
	expired       bool // its max_duration passed
	target        Target
	src           Source
	ring          *Ring
	started       time.Time
	restarts      int
	lastErr       string
	drops         uint64     // kernel drops of the sources that ended
	srcDrops      uint64     // kernel drops of the current source, last seen
	pushed        RingCounts // what refreshStats moved into the metrics
	// reason, alerts, trigger, maxDuration, stopGrace and cooldown are the latest Ensure's
	// (they may change without restarting the capture; see Spec.sameCapture).
	reason      string
	alerts      string
	trigger     string
	maxDuration time.Duration // 0: no deadline
	stopGrace   time.Duration
	cooldown    time.Duration
	armed       bool      // the capture has started: deadline counts from then
	began       time.Time // when: capture.json's started, set once (not a process's start)
	deadline    time.Time
	// graceUntil is when a capture no longer desired stops (StopAfterGrace); zero when it
	// is desired. heldDeadline is its deadline before the grace, restored if it is decided
	// again meanwhile.
	graceUntil   time.Time
	heldDeadline time.Time
	coolAfter    bool // it ends because it is no longer desired: its cooldown applies
	// preTrigger are the flight recorder's files preserved as the capture started, relative
	// to dir (pre-trigger/<name>), and preBytes what they hold.
	preTrigger []string
	preBytes   int64
	statsDone  bool // the final counters went to the metrics; nothing more may

	deadlineMoved chan struct{} // poked by update when the deadline changes
}

func newRun(spec Spec, dir string, prev *run) *run {
	r := &run{
		spec:          spec,
		dir:           dir,
		prev:          prev,
		reserve:       spec.worstCase(),
		done:          make(chan struct{}),
		recheck:       make(chan struct{}, 1),
		deadlineMoved: make(chan struct{}, 1),
		reason:        spec.Reason,
		alerts:        spec.Alerts,
		trigger:       spec.Trigger,
		maxDuration:   spec.MaxDuration,
		stopGrace:     spec.StopGrace,
		cooldown:      spec.Cooldown,
		phase:         PhaseQueued,
	}
	return r
}

// poke asks the run to re-resolve the pod (its container may have restarted); never blocks.
func (r *run) poke() {
	select {
	case r.recheck <- struct{}{}:
	default:
	}
}

// setPhase records where the capture's goroutine is. Once the capture is asked to stop it
// stays Stopping until it ended (finish sets the last phase).
func (r *run) setPhase(p Phase) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopRequested && (p == PhaseStarting || p == PhaseRunning || p == PhaseBackoff) {
		return
	}
	r.phase = p
}

func (r *run) getPhase() Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.phase
}

// requestStop marks the capture as no longer desired and returns the phase it was in; a
// started one becomes Stopping.
func (r *run) requestStop() Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.phase
	r.stopRequested = true
	if was != PhaseQueued && was != PhaseExpired {
		r.phase = PhaseStopping
	}
	return was
}

// ended reports why the capture's goroutine is ending: asked to stop, and/or its deadline.
func (r *run) ended() (requested, expired bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopRequested, r.expired
}

func (r *run) status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	spec := r.spec
	spec.Reason, spec.Alerts, spec.Trigger = r.reason, r.alerts, r.trigger
	spec.MaxDuration, spec.StopGrace, spec.Cooldown = r.maxDuration, r.stopGrace, r.cooldown
	s := Status{
		Spec:        spec,
		StopsAt:     r.graceUntil,
		Phase:       r.phase,
		Dir:         r.dir,
		PID:         r.target.PID,
		Started:     r.started,
		Restarts:    r.restarts,
		LastError:   r.lastErr,
		KernelDrops: r.drops + r.srcDrops,
	}
	if r.ring != nil {
		c := r.ring.Counts()
		s.Packets, s.Bytes, s.DiskBytes = c.Packets, c.Bytes, r.ring.DiskBytes()
	}
	return s
}

// refreshStats asks the source for fresh kernel counters and moves the counters that grew
// since the last refresh into the metrics. After finalStats it does nothing: the capture's
// series are gone and must not come back (at 0, a counter reset) from a late refresh.
func (r *run) refreshStats(m *metrics.Metrics) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refreshStatsLocked(m)
}

// finalStats moves the last counters into the metrics and closes them for this run.
func (r *run) finalStats(m *metrics.Metrics) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refreshStatsLocked(m)
	r.statsDone = true
}

func (r *run) refreshStatsLocked(m *metrics.Metrics) {
	if r.statsDone {
		return
	}
	if r.src != nil {
		r.src.RequestStats()
		r.takeDropsLocked(m, r.src.Stats().Dropped)
	}
	if r.ring != nil {
		c := r.ring.Counts()
		l := []string{r.spec.Namespace, r.spec.Pod}
		m.Packets.WithLabelValues(l...).Add(float64(c.Packets - r.pushed.Packets))
		m.Bytes.WithLabelValues(l...).Add(float64(c.Bytes - r.pushed.Bytes))
		m.FileRotations.WithLabelValues(l...).Add(float64(c.Rotations - r.pushed.Rotations))
		r.pushed = c
	}
}

func (r *run) takeDropsLocked(m *metrics.Metrics, dropped uint64) {
	if dropped > r.srcDrops {
		m.KernelDrops.WithLabelValues(r.spec.Namespace, r.spec.Pod).Add(float64(dropped - r.srcDrops))
		r.srcDrops = dropped
	}
}

func (r *run) fail(err error) {
	r.mu.Lock()
	r.lastErr = err.Error()
	r.mu.Unlock()
}

// startedBy names what started a policy or alert capture, for its CaptureStarted Event:
// the decision's reason (which names the alerts) and how many alerts are behind it.
func (r *run) startedBy() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.spec.Source {
	case SourceManual, "":
		return ""
	case SourceRecorder:
		return fmt.Sprintf("; flight recorder: %s (its files are deleted when it stops, preserved by a policy or alert capture that starts meanwhile)", r.reason)
	}
	pre := ""
	if len(r.preTrigger) > 0 {
		pre = fmt.Sprintf("; the flight recorder's last %d files preserved in %s/", len(r.preTrigger), PreTriggerDir)
	}
	if r.spec.Source == SourceAlert {
		return fmt.Sprintf("; trigger: %s (%d alerts, see capture.json)%s", r.reason, strings.Count(r.alerts, ",")+1, pre)
	}
	return fmt.Sprintf("; trigger: %s%s", r.reason, pre)
}

func sourceLabel(s Spec) string {
	if s.Source == "" {
		return SourceManual
	}
	return s.Source
}
