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

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/metrics"
)

// CaptureManager is what the controller needs of the capture manager.
type CaptureManager interface {
	// Ensure makes spec the pod's desired capture without blocking; queued reports that the
	// node's concurrency cap made it wait.
	Ensure(spec capture.Spec) (queued bool, err error)
	// Stop ends the pod's capture, if any (a manual capture's files are deleted).
	Stop(namespace, pod string)
	// CleanStale deletes the files of every pod for which keep returns false.
	CleanStale(keep func(namespace, pod string) bool) ([]string, error)
}

var _ CaptureManager = (*capture.Manager)(nil)

// Config is the controller's part of the agent's configuration.
type Config struct {
	NodeName         string
	AnnotationKey    string
	MaxFiles         int
	AllowHostNetwork bool
	Workers          int
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

	mu sync.Mutex
	// mu protects the field below.
	reported map[string]string // pod key → the invalid request last reported for it
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
		reported: map[string]string{},
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
	removed, err := c.captures.CleanStale(c.keepFiles)
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
	spec, _ := c.desiredCapture(pod)
	return spec != nil
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
		return nil
	}
	if err != nil {
		return err
	}
	spec, bad := c.desiredCapture(pod)
	if bad != nil {
		c.captures.Stop(namespace, name)
		c.reportInvalid(ctx, pod, bad) // permanent until the pod changes: not retried
		return nil
	}
	c.forgetReported(key)
	if spec == nil {
		c.captures.Stop(namespace, name)
		return nil
	}
	queued, err := c.captures.Ensure(*spec)
	if errors.Is(err, capture.ErrShutdown) {
		return nil // the agent is stopping
	}
	if err != nil {
		c.reportInvalid(ctx, pod, &invalidRequest{reason: metrics.InvalidName, message: err.Error()})
		return nil
	}
	if queued {
		c.recorder.Eventf(pod, corev1.EventTypeWarning, capture.ReasonQueued,
			"capture waits: the node already runs its maximum of concurrent captures (--max-concurrent-captures); it starts when one ends")
	}
	return nil
}

// reportInvalid sends the Warning Event and counts the metric once per distinct problem.
func (c *Controller) reportInvalid(ctx context.Context, pod *corev1.Pod, bad *invalidRequest) {
	key := pod.Namespace + "/" + pod.Name
	id := string(pod.UID) + "|" + bad.message
	c.mu.Lock()
	seen := c.reported[key] == id
	c.reported[key] = id
	c.mu.Unlock()
	if seen {
		return
	}
	c.metrics.InvalidRequests.WithLabelValues(bad.reason).Inc()
	c.recorder.Event(pod, corev1.EventTypeWarning, ReasonInvalidRequest, bad.message)
	klog.FromContext(ctx).Info("Refused capture request", "pod", klog.KObj(pod), "reason", bad.reason, "message", bad.message)
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
