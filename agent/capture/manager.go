package capture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Event reasons on the pod, constant so that users can select on them.
const (
	ReasonStarted = "CaptureStarted"
	ReasonStopped = "CaptureStopped"
	ReasonFailed  = "CaptureFailed"
	ReasonQueued  = "CaptureQueued"
	// ReasonStopping: a capture no longer desired goes on for its stop grace.
	ReasonStopping = "CaptureStopping"
	// ReasonCoolingDown: a capture waits for the cooldown of the pod's last one.
	ReasonCoolingDown = "CaptureCoolingDown"
)

// Event types, the same strings as Kubernetes' corev1.EventTypeNormal/Warning.
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

// Notifier receives what a capture did, for Kubernetes Events on the pod.
type Notifier interface {
	Notify(s Spec, eventType, reason, message string)
}

// Manager converges the running captures to the desired ones. Ensure and Stop never block on
// a capture process: each capture has its own goroutine that resolves the pod, runs the
// engine, restarts it with backoff, and cleans up.
type Manager struct {
	cfg    Config
	ctx    context.Context // parent of every capture goroutine; cancelled when Run returns
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// mu protects the fields below.
	runs     map[string]*run // desired captures by key: queued, starting, running, backing off
	stopping map[string]*run // captures asked to stop whose goroutine has not finished
	queue    []*run          // runs waiting for a slot or for budget, oldest first
	active   int             // goroutines holding a slot (running or stopping)
	reserved int64           // the worst case of the captures holding a slot, in bytes
	rings    int64           // the kernel rings of the native captures holding a slot, in bytes
	kept     int64           // bytes of the files of no live capture, as of the last sweep
	// cooldowns of the pods whose last non-manual capture ended recently, by key; forgotten
	// when over (pruneCooldowns) or when the pod is gone (Stop)
	cooldowns map[string]*cooldown
	// series counts the started captures of each pod (by Key) whose goroutine has not
	// cleaned up: a pod's per-capture metric series are shared by its capture and its flight
	// recorder, and deleted when the last of them ends.
	series map[string]int

	streams *streamLimits // the node's live stream readers

	sweepMu  sync.Mutex    // one retention sweep at a time
	sweepNow chan struct{} // kickSweep asks Run for a retention sweep
}

// NewManager returns a Manager; call Run to serve it.
func NewManager(cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if cfg.Dir == "" || cfg.Engines[cfg.DefaultEngine] == nil || cfg.Resolver == nil || cfg.Notifier == nil || cfg.Metrics == nil {
		return nil, errors.New("capture manager: Dir, the default engine, Resolver, Notifier and Metrics are required")
	}
	if cfg.Engines[EngineNative] != nil && (cfg.NativeRingBytes <= 0 || cfg.NativeRingBudget < cfg.NativeRingBytes) {
		return nil, fmt.Errorf("capture manager: a native engine needs its ring size (%d bytes) and a ring budget at least as large (%d bytes)",
			cfg.NativeRingBytes, cfg.NativeRingBudget)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("create capture dir: %w", err)
	}
	for _, s := range sources { // series exist from the first scrape, so that rate() works
		cfg.Metrics.CapturesRunning.WithLabelValues(s)
		cfg.Metrics.CaptureStarts.WithLabelValues(s)
		cfg.Metrics.FirstPacket.WithLabelValues(s)
	}
	cfg.Metrics.BudgetBytes.Set(float64(cfg.Retention.MaxBytes))
	cfg.Resolver = timedResolver{next: cfg.Resolver, clock: cfg.Clock, hist: cfg.Metrics.CRILookupDuration}
	for _, e := range engines {
		cfg.Metrics.EngineCapturesRunning.WithLabelValues(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		cfg:      cfg,
		ctx:      ctx,
		cancel:   cancel,
		runs:     map[string]*run{},
		stopping: map[string]*run{},
		sweepNow: make(chan struct{}, 1),
		streams:  newStreamLimits(cfg.Streams),

		cooldowns: map[string]*cooldown{},
		series:    map[string]int{},
	}
	cfg.Metrics.SetFileBytes(m.fileBytes)
	return m, nil
}

// Errors of Ensure.
var (
	ErrShutdown = errors.New("capture manager is shutting down")
	// ErrOverBudget: the capture's worst case alone exceeds the node's byte budget. A
	// permanent refusal for this spec.
	ErrOverBudget = errors.New("the capture may write more than the node's byte budget")
	// ErrEngineUnavailable: the Spec names an engine this agent does not run (the native
	// engine could not be built on this node, or an unknown name). A permanent refusal for
	// this spec: never another engine instead.
	ErrEngineUnavailable = errors.New("capture engine unavailable")
)

// resolveEngine replaces spec's Engine "" by the default engine, and checks that the manager
// runs the engine named.
func (m *Manager) resolveEngine(spec *Spec) error {
	if spec.Engine == "" {
		spec.Engine = m.cfg.DefaultEngine
	}
	if m.cfg.Engines[spec.Engine] != nil {
		return nil
	}
	if err := m.cfg.EngineErrors[spec.Engine]; err != nil {
		return fmt.Errorf("%w: the %s engine cannot run on this node: %w", ErrEngineUnavailable, spec.Engine, err)
	}
	return fmt.Errorf("%w: %q is not an engine of this agent (%s or %s)", ErrEngineUnavailable, spec.Engine, EngineTcpdump, EngineNative)
}

// Key is how captures are named: namespace/pod, like a workqueue key. A pod's flight
// recorder has a slot of its own beside it (Spec.slot).
func Key(namespace, pod string) string { return namespace + "/" + pod }

// Ensure makes spec the desired capture of its pod. An identical running capture only checks
// that it still follows the pod's container and takes the new deadline; a different one
// (ring size, pod UID, filter, ...) is stopped (a manual one's files deleted) and the new one
// started. A capture that reached its MaxDuration is not started again for the same spec
// until Stop.
//
// Every capture reserves its worst case (WorstCaseBytes of its ring) against the node's byte
// budget (Retention.MaxBytes) while it holds a slot, so that the running captures together
// can never write more than the budget; finished captures' files are evicted, oldest first,
// to make room. A capture that finds no free slot under MaxConcurrent or no room for its
// reservation waits in a queue (a CaptureQueued Event says which) and starts when a capture
// ends; one whose worst case alone exceeds the budget is refused (ErrOverBudget). Ensure
// reports whether this call queued the capture.
//
// A capture runs on the engine its Spec names ("" the DefaultEngine); one naming an engine
// the manager does not run is refused (ErrEngineUnavailable), never run on another. A
// native capture also reserves its kernel ring (NativeRingBytes) under NativeRingBudget
// while it holds a slot, and waits in the queue when the ring does not fit.
//
// A policy or alert capture in its stop grace (StopAfterGrace) continues when the same
// capture is ensured again. One that would start within the cooldown of the pod's last
// policy or alert capture does not start: Ensure returns a *CoolingDownError (ErrCoolingDown)
// saying until when, and the first such call of a cooldown sends a CaptureCoolingDown Event;
// the caller ensures it again then.
//
// A flight recorder (SourceRecorder) has a slot of its own: it runs beside the pod's other
// capture, never replaces it, and is ended by StopRecorder. A policy or alert capture that
// starts while the pod has one also reserves the recorder's worst case, for the recorder's
// files it preserves in its pre-trigger/ directory as it starts.
func (m *Manager) Ensure(spec Spec) (queued bool, err error) {
	podDir, err := m.podDir(spec.Namespace, spec.Pod)
	if err != nil {
		return false, err
	}
	if spec.Files < 1 {
		return false, fmt.Errorf("ring of %d files", spec.Files)
	}
	if err := m.resolveEngine(&spec); err != nil {
		return false, err
	}
	need := spec.worstCase()
	if need > m.cfg.Retention.MaxBytes {
		return false, fmt.Errorf("%w: a ring of %d files of %d bytes at snaplen %d may hold %d bytes, the budget is %d (--retention-max-bytes): ask for fewer or smaller files",
			ErrOverBudget, spec.Files, spec.FileSize, spec.snaplen(), need, m.cfg.Retention.MaxBytes)
	}
	key := spec.slot()
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	if m.ctx.Err() != nil {
		m.mu.Unlock()
		return false, ErrShutdown
	}
	if r := m.runs[key]; r != nil {
		if r.spec.sameCapture(spec) {
			resumed := r.update(spec, now)
			r.poke()
			m.mu.Unlock()
			if resumed {
				m.cfg.Notifier.Notify(spec, EventNormal, ReasonStarted, "decided again during its stop grace: the capture goes on, same ring")
			}
			return false, nil
		}
		m.stopLocked(r) // replaced: no cooldown
	}
	if spec.session() {
		if cerr, first := m.coolingLocked(spec, now); cerr != nil {
			m.mu.Unlock()
			if first {
				m.cfg.Notifier.Notify(spec, EventNormal, ReasonCoolingDown, coolingMessage(cerr))
			}
			return false, cerr
		}
	}
	dir := podDir
	switch {
	case spec.session():
		dir = m.sessionDirLocked(podDir, spec.Source, now)
	case spec.Source == SourceRecorder:
		dir = filepath.Join(podDir, RecorderDir)
	}
	r := newRun(spec, dir, m.stopping[key])
	r.requested = m.cfg.Clock.Now()
	r.hub = newHub(m.streams)
	if spec.Engine == EngineNative {
		r.nativeRing = m.cfg.NativeRingBytes
	}
	if rec := m.runs[recorderSlot(spec.Namespace, spec.Pod)]; spec.session() && rec != nil && rec.spec.UID == spec.UID {
		// room for the recorder's files it will link into pre-trigger/ (preserveRecorder)
		r.preReserve = rec.spec.worstCase()
		r.reserve += r.preReserve
	}
	m.runs[key] = r
	why := m.waitReasonLocked(r)
	if why == "" {
		m.startLocked(r)
	} else {
		m.queue = append(m.queue, r) // a new run is Queued
		m.queueChangedLocked()
	}
	m.mu.Unlock()
	if why != "" {
		m.cfg.Notifier.Notify(spec, EventWarning, ReasonQueued, m.queuedMessage(why, need))
	}
	return why != "", nil
}

// sessionTimeFormat names the directory of a non-manual capture after its start time.
const sessionTimeFormat = "20060102T150405.000Z"

// sessionDirLocked names a new non-manual capture's directory <source>-<time>, with a suffix
// when a capture of the same millisecond has that name (its kept files must stay its own).
func (m *Manager) sessionDirLocked(podDir, source string, now time.Time) string {
	base := filepath.Join(podDir, source+"-"+now.UTC().Format(sessionTimeFormat))
	inUse := m.dirsInUseLocked(nil)
	dir := base
	for n := 2; inUse[dir] || statErr(dir) == nil; n++ {
		dir = fmt.Sprintf("%s-%d", base, n)
	}
	return dir
}

func statErr(p string) error { _, err := os.Stat(p); return err }

// Stop ends the capture of a pod at once, if any. A manual capture's files are deleted;
// other captures keep theirs under the retention rules. A pod without a capture loses the
// files of a manual ring an earlier agent left. The pod's cooldown is forgotten: Stop is for
// a pod that is gone (see StopAfterGrace).
func (m *Manager) Stop(namespace, pod string) { m.stop(namespace, pod, true) }

// stop ends the pod's capture at once: for a pod that is gone (its cooldown is forgotten),
// or one whose capture is no longer desired (its cooldown applies once it ended).
func (m *Manager) stop(namespace, pod string, gone bool) {
	key := Key(namespace, pod)
	m.mu.Lock()
	r := m.runs[key]
	// a capture that never started (queued) has no goroutine to delete the files; an earlier
	// agent's ring may be there, waiting to be adopted
	neverStarted := false
	if gone {
		m.forgetCooldownLocked(key, m.cfg.Clock.Now())
		if r != nil {
			neverStarted = m.stopLocked(r) == PhaseQueued
		}
	} else if r != nil {
		neverStarted = m.endLocked(r) == PhaseQueued
	}
	busy := m.stopping[key] != nil
	m.mu.Unlock()
	if (r == nil || neverStarted && r.spec.Source == SourceManual) && !busy {
		if dir, err := m.podDir(namespace, pod); err == nil {
			m.removeManualRing(dir, pod, nil)
		}
	}
	if gone {
		m.StopRecorder(namespace, pod)
	}
}

// stopLocked takes r out of the desired set; its goroutine (if started) stops the capture.
// It returns the phase r was in.
func (m *Manager) stopLocked(r *run) Phase {
	key := r.spec.slot()
	delete(m.runs, key)
	was := r.requestStop()
	switch was {
	case PhaseQueued:
		m.dequeueLocked(r)
	case PhaseExpired: // its goroutine is gone; its files stay under retention
	default:
		m.stopping[key] = r
		r.cancel()
	}
	return was
}

func (m *Manager) startLocked(r *run) {
	m.active++
	m.reserved += r.reserve
	m.cfg.Metrics.ReservedBytes.Set(float64(m.reserved))
	m.rings += r.nativeRing
	m.cfg.Metrics.NativeRingBytes.Set(float64(m.rings))
	key := Key(r.spec.Namespace, r.spec.Pod)
	if m.series[key]++; m.series[key] == 1 {
		m.cfg.Metrics.InitCapture(r.spec.Namespace, r.spec.Pod)
	}
	r.setPhase(PhaseStarting)
	ctx, cancel := context.WithCancel(m.ctx)
	r.cancel = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.runCapture(ctx, r)
	}()
}

// finish is called by a capture goroutine when it ends: the slot goes to the oldest queued
// run, and the pod's cooldown starts if r asks for one.
func (m *Manager) finish(r *run, started bool) {
	key := r.spec.slot()
	m.mu.Lock()
	m.active--
	m.reserved -= r.reserve
	m.cfg.Metrics.ReservedBytes.Set(float64(m.reserved))
	m.rings -= r.nativeRing
	m.cfg.Metrics.NativeRingBytes.Set(float64(m.rings))
	if m.stopping[key] == r {
		delete(m.stopping, key)
	}
	if m.runs[key] == r { // ended by shutdown, by a permanent failure, or expired
		delete(m.runs, key)
	}
	if requested, expired := r.ended(); expired && m.runs[key] == nil && !requested {
		// max_duration passed: remembered so that the same decision does not restart it
		r.setPhase(PhaseExpired)
		m.runs[key] = r
	} else {
		r.setPhase(PhaseStopped)
	}
	m.startCooldownLocked(r, started, m.cfg.Clock.Now())
	if m.ctx.Err() == nil {
		m.startQueuedLocked()
	}
	m.mu.Unlock()
}

// Run serves the manager until ctx ends: it refreshes kernel counters, and on return stops
// every capture (keeping their files, so that the next agent adopts them) and waits for them.
func (m *Manager) Run(ctx context.Context) error {
	t := m.cfg.Clock.NewTicker(m.cfg.StatsInterval)
	defer t.Stop()
	sweep := m.cfg.Clock.NewTicker(m.cfg.Retention.Interval)
	defer sweep.Stop()
	m.sweep()
	for {
		select {
		case <-ctx.Done():
			m.mu.Lock()
			m.cancel() // under mu: no Ensure starts a capture after this
			m.queue = nil
			m.queueChangedLocked()
			m.mu.Unlock()
			m.wg.Wait()
			return nil
		case <-t.C():
			m.refreshStats()
			m.pruneCooldowns()
		case <-sweep.C():
			m.sweep()
		case <-m.sweepNow:
			m.sweep()
		}
	}
}

func (m *Manager) refreshStats() {
	m.mu.Lock()
	var live []*run
	for _, r := range m.runs {
		live = append(live, r)
	}
	m.mu.Unlock()
	for _, r := range live {
		r.refreshStats(m.cfg.Metrics)
	}
}

// podDir is Dir/<namespace>/<pod>, built only from names that are valid Kubernetes names.
func (m *Manager) podDir(namespace, pod string) (string, error) {
	if err := ValidatePathName(namespace); err != nil {
		return "", fmt.Errorf("namespace: %w", err)
	}
	if err := ValidatePathName(pod); err != nil {
		return "", fmt.Errorf("pod name: %w", err)
	}
	return filepath.Join(m.cfg.Dir, namespace, pod), nil
}

// removeManualRing deletes the manual ring files of a pod (capture-<pod>.pcap*, directly in
// its directory), then the pod's and the namespace's directories if that left them empty
// (pruneDirs). The directories of other captures stay: retention removes them. self is the
// capture whose cleanup this is, if any.
func (m *Manager) removeManualRing(dir, pod string, self *run) {
	base := RingBase(pod)
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		klog.Background().Error(err, "Reading capture directory", "dir", dir)
	}
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), base) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				klog.Background().Error(err, "Removing capture file", "dir", dir, "file", e.Name())
			}
		}
	}
	m.pruneDirs(dir, self)
}

// pruneDirs removes a pod's directory, then its namespace's, when they are empty and no
// capture but self may still use them. Captures create their directory as they start; one
// removed under a capture that is registered (queued, starting, running, being stopped or
// waited for) would leave its ring writing into a deleted directory, so the check and the
// removal happen under mu, where captures are registered.
func (m *Manager) pruneDirs(podDir string, self *run) {
	nsDir := filepath.Dir(podDir)
	m.mu.Lock()
	defer m.mu.Unlock()
	podBusy, nsBusy := false, false
	for dir := range m.dirsInUseLocked(self) {
		podBusy = podBusy || within(dir, podDir)
		nsBusy = nsBusy || within(dir, nsDir)
	}
	if !podBusy {
		_ = os.Remove(podDir) // only succeeds when empty
	}
	if !nsBusy {
		_ = os.Remove(nsDir)
	}
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
}
