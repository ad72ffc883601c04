package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/metrics"
	"github.com/podcap/podcap/policy"
)

// CaptureManager is what the controller needs of the capture manager.
type CaptureManager interface {
	// Ensure makes spec the pod's desired capture without blocking; queued reports that it
	// waits (for a slot or for room under the byte budget: the manager's CaptureQueued Event
	// says which).
	Ensure(spec capture.Spec) (queued bool, err error)
	// Ensure returns an error wrapping capture.ErrCoolingDown (a *capture.CoolingDownError
	// saying until when) for a policy or alert capture that waits for the cooldown of the
	// pod's last one; the manager's CaptureCoolingDown Event says so.
	//
	// Stop ends the pod's capture at once, if any (a manual capture's files are deleted), and
	// forgets its cooldown: for a pod that is gone, being deleted or no longer running.
	Stop(namespace, pod string)
	// StopAfterGrace ends the capture of the pod uid that is no longer desired: at once, or
	// after the stop grace its decision asked for (an Ensure meanwhile continues it).
	StopAfterGrace(namespace, pod, uid string)
	// CleanStale deletes the manual ring of every pod for which keep returns false, and the
	// flight recorder's files of every pod for which exists returns false.
	CleanStale(keep, exists func(namespace, pod string) bool) ([]string, error)
	// Status reports the pod's capture, if there is one.
	Status(namespace, pod string) (capture.Status, bool)

	// A flight recorder (a Spec of source capture.SourceRecorder, given to Ensure) runs in a
	// slot of its own beside the pod's capture. StopRecorder ends it and deletes its files
	// (or the files an earlier agent left); Stop ends it too. RecorderStatus reports it.
	StopRecorder(namespace, pod string)
	RecorderStatus(namespace, pod string) (capture.Status, bool)
}

var _ CaptureManager = (*capture.Manager)(nil)

// Config is the controller's part of the agent's configuration and its optional parts.
type Config struct {
	NodeName         string
	AnnotationKey    string
	MaxFiles         int
	AllowHostNetwork bool
	Workers          int

	// Policy decides automatic captures; nil: only the manual annotation.
	Policy Policy
	// Alerts are the active alerts a policy sees (input.alerts); nil: none. Call
	// Controller.EnqueueAll when the set changes.
	Alerts AlertSource
	// Limits bound what a policy decision may ask for.
	Limits policy.Limits
	// Filters validates a decision's BPF filter; required with Policy.
	Filters FilterChecker
	// Engines: the default engine (--engine) and the native engine's filter check.
	Engines Engines
	// PolicyResync re-evaluates every pod this often (rules may read input.now); default 30s.
	PolicyResync time.Duration
	// Clock is injected for tests; default the real clock.
	Clock clock.Clock
}

// Controller watches the pods bound to this node and converges their captures: one
// level-triggered sync per pod key, from a rate-limited workqueue.
type Controller struct {
	cfg      Config
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	pods     corelisters.PodLister
	queue    workqueue.TypedRateLimitingInterface[string]
	captures CaptureManager
	recorder record.EventRecorder
	metrics  *metrics.Metrics
	synced   atomic.Bool

	policy    Policy // nil without a policy
	filters   FilterChecker
	clock     clock.Clock
	decisions *decisionCache

	mu sync.Mutex
	// mu protects the field below.
	reported map[string]map[string]bool // pod key → the problems last reported for it
}

// NewController builds the controller; Run starts it.
func NewController(client kubernetes.Interface, captures CaptureManager, recorder record.EventRecorder, m *metrics.Metrics, cfg Config) (*Controller, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("node name is required")
	}
	if cfg.AnnotationKey == "" {
		cfg.AnnotationKey = DefaultAnnotationKey
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.PolicyResync <= 0 {
		cfg.PolicyResync = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Policy != nil && cfg.Filters == nil {
		return nil, errors.New("a policy needs a filter checker")
	}
	if e := cfg.Engines.Default; e != "" && e != capture.EngineTcpdump && e != capture.EngineNative {
		return nil, fmt.Errorf("default capture engine %q: want %s or %s", e, capture.EngineTcpdump, capture.EngineNative)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "spec.nodeName=" + cfg.NodeName
		}),
		informers.WithTransform(trimPod))
	informer := factory.Core().V1().Pods()
	c := &Controller{
		cfg:      cfg,
		factory:  factory,
		informer: informer.Informer(),
		pods:     informer.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pods"}),
		captures: captures,
		recorder: recorder,
		metrics:  m,
		reported: map[string]map[string]bool{},

		policy:    cfg.Policy,
		filters:   cfg.Filters,
		clock:     cfg.Clock,
		decisions: &decisionCache{ttl: cfg.PolicyResync, entries: map[string]cachedDecision{}},
	}
	_, err := c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
		DeleteFunc: c.enqueue,
	})
	if err != nil {
		return nil, fmt.Errorf("add pod event handler: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.Add(key)
}

// EnqueueAll queues every pod of the node, e.g. after the policy changed.
func (c *Controller) EnqueueAll() {
	for _, obj := range c.informer.GetStore().List() {
		c.enqueue(obj)
	}
}

// Synced reports whether the pod cache has synced and stale captures were cleaned (readiness).
func (c *Controller) Synced() bool { return c.synced.Load() }

// Run starts the informer, cleans up files of pods that no longer want a capture, and runs
// the workers until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	log := klog.FromContext(ctx)
	defer c.queue.ShutDown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return errors.New("pod cache did not sync")
	}
	removed, err := c.captures.CleanStale(c.keepFiles, c.podExists)
	if err != nil {
		log.Error(err, "Cleaning stale capture files")
	}
	if len(removed) > 0 {
		log.Info("Removed capture files of pods that no longer ask for a capture", "pods", removed)
	}
	c.synced.Store(true)
	log.Info("Pod cache synced, starting workers", "node", c.cfg.NodeName, "workers", c.cfg.Workers)
	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Go(func() { wait.UntilWithContext(ctx, c.runWorker, time.Second) })
	}
	if c.policy != nil {
		// rules may read input.now: re-evaluate every pod now and then (cached otherwise)
		wg.Go(func() {
			wait.UntilWithContext(ctx, func(context.Context) { c.EnqueueAll() }, c.cfg.PolicyResync)
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

// keepFiles says whether a pod's capture files survive an agent restart: only while the pod
// still exists and still asks for a capture.
func (c *Controller) keepFiles(namespace, name string) bool {
	pod, err := c.pods.Pods(namespace).Get(name)
	if err != nil {
		return false
	}
	spec, _ := c.desiredCapture(pod) // manual rings only: policy captures are under retention
	return spec != nil
}

// podExists says whether a pod's flight recorder files may survive an agent restart until the
// pod's first sync decides (a recorder is no longer desired: StopRecorder deletes them).
func (c *Controller) podExists(namespace, name string) bool {
	_, err := c.pods.Pods(namespace).Get(name)
	return err == nil
}

func (c *Controller) runWorker(ctx context.Context) {
	for c.processNext(ctx) {
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	t0 := time.Now()
	err := c.sync(ctx, key)
	c.metrics.SyncDuration.Observe(time.Since(t0).Seconds())
	if err == nil {
		c.queue.Forget(key)
		return true
	}
	// transient: retried with the rate limiter's backoff
	c.metrics.SyncErrors.Inc()
	klog.FromContext(ctx).Error(err, "Syncing pod, will retry", "pod", key)
	c.queue.AddRateLimited(key)
	return true
}

// sync converges one pod's capture to what the pod asks for. It reads only the cache and
// never waits for a capture process.
func (c *Controller) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // permanent: a malformed key never becomes valid
	}
	pod, err := c.pods.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		c.captures.Stop(namespace, name)
		c.forgetReported(key)
		c.decisions.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	want, err := c.desired(ctx, pod)
	if err != nil {
		return err // transient (tcpdump could not check a filter, the evaluation was cancelled): retried
	}
	problems := want.problems // permanent until the pod or the policy changes: not retried
	// the flight recorder first: a capture decided at the same time finds it in place
	switch {
	case want.keepRecorder: // the policy could not decide in time: the recorder stays as it is
	case want.recorder == nil:
		c.captures.StopRecorder(namespace, name)
	default:
		_, err := c.captures.Ensure(*want.recorder)
		switch {
		case errors.Is(err, capture.ErrShutdown):
			return nil // the agent is stopping
		case errors.Is(err, capture.ErrOverBudget):
			problems = append(problems, &invalidRequest{reason: metrics.InvalidOverBudget, message: "flight recorder: " + err.Error()})
		case errors.Is(err, capture.ErrEngineUnavailable):
			problems = append(problems, &invalidRequest{reason: metrics.InvalidEngine, message: "flight recorder: " + err.Error()})
		case err != nil:
			problems = append(problems, &invalidRequest{reason: metrics.InvalidName, message: "flight recorder: " + err.Error()})
		}
	}
	switch {
	case want.keep: // the policy could not decide in time: the capture stays as it is
	case want.spec == nil && podEnding(pod):
		c.captures.Stop(namespace, name)
	case want.spec == nil:
		c.captures.StopAfterGrace(namespace, name, string(pod.UID))
	default:
		// a queued capture's CaptureQueued Event comes from the capture manager, which knows
		// what it waits for; so does the CaptureCoolingDown Event
		_, err := c.captures.Ensure(*want.spec)
		var cooling *capture.CoolingDownError
		switch {
		case errors.Is(err, capture.ErrShutdown):
			return nil // the agent is stopping
		case errors.As(err, &cooling):
			// not a problem of the request: it starts when the cooldown ends, if still decided
			c.queue.AddAfter(key, max(cooling.Until.Sub(c.clock.Now()), 0)+time.Second)
		case errors.Is(err, capture.ErrOverBudget):
			problems = append(problems, &invalidRequest{reason: metrics.InvalidOverBudget, message: err.Error()})
		case errors.Is(err, capture.ErrEngineUnavailable):
			problems = append(problems, &invalidRequest{reason: metrics.InvalidEngine, message: err.Error()})
		case err != nil:
			problems = append(problems, &invalidRequest{reason: metrics.InvalidName, message: err.Error()})
		}
	}
	c.report(ctx, pod, problems)
	return nil
}

// podEnding reports whether the pod is being deleted or has stopped running for good: its
// capture stops at once, without a stop grace.
func podEnding(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// report sends a Warning Event and counts the metric once for each problem of the pod that
// was not reported at its last sync.
func (c *Controller) report(ctx context.Context, pod *corev1.Pod, problems []*invalidRequest) {
	key := pod.Namespace + "/" + pod.Name
	now := make(map[string]bool, len(problems))
	c.mu.Lock()
	before := c.reported[key]
	for _, p := range problems {
		now[string(pod.UID)+"|"+p.message] = true
	}
	if len(now) == 0 {
		delete(c.reported, key)
	} else {
		c.reported[key] = now
	}
	c.mu.Unlock()
	for _, p := range problems {
		if before[string(pod.UID)+"|"+p.message] {
			continue
		}
		reason := p.eventReason
		if reason == "" {
			reason = ReasonInvalidRequest
			c.metrics.InvalidRequests.WithLabelValues(p.reason).Inc()
		} else {
			c.metrics.PolicyErrors.WithLabelValues(p.reason).Inc()
		}
		c.recorder.Event(pod, corev1.EventTypeWarning, reason, p.message)
		klog.FromContext(ctx).Info("Refused capture request", "pod", klog.KObj(pod), "reason", reason, "message", p.message)
	}
}

func (c *Controller) forgetReported(key string) {
	c.mu.Lock()
	delete(c.reported, key)
	c.mu.Unlock()
}

// PodEvents turns capture outcomes into Events on the pod (a capture.Notifier).
type PodEvents struct{ Recorder record.EventRecorder }

var _ capture.Notifier = PodEvents{}

// Notify implements capture.Notifier.
func (e PodEvents) Notify(s capture.Spec, eventType, reason, message string) {
	ref := &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: s.Namespace, Name: s.Pod, UID: types.UID(s.UID)}
	e.Recorder.Event(ref, eventType, reason, message)
}
