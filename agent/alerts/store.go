package alerts

// The Store: every agent learns every alert.
//
// Alertmanager reaches one agent; [Store.Record] writes each alert as a CaptureAlert object
// (podcap.io/v1alpha1, deploy/crd/capturealerts.yaml) in the agent's namespace, named by its
// fingerprint, with one server-side apply per alert (field manager "podcap-agent", forced):
// the same notification twice is the same object, renewed (status.lastNotifiedAt). Every
// agent's Store watches the objects with an informer; [Store.Active] is the policy's
// input.alerts and OnChange re-evaluates the node's pods when that set changes.
//
// An alert is active while its status is firing, its endsAt (if known) has not passed and its
// last notification is younger than TTL. Defaults and how they relate:
//   - TTL (--alert-ttl) 6h. Alertmanager re-sends a firing alert every repeat_interval
//     (default 4h; the first group flush after it, so up to repeat_interval + group_interval,
//     default 5m) and sends a resolve when it ends; TTL is the safety net for a resolve that
//     never arrives. It must exceed the receiver's repeat_interval + group_interval, or
//     firing alerts blink out between notifications; 6h leaves room for a failed send's
//     retries. For faster clean-up lower both (repeat_interval 1h, TTL 90m).
//   - Retention 1h: an object inactive for this long is deleted by any agent's garbage
//     collection (every GCInterval, 2m, jittered), with a UID and resourceVersion precondition
//     (a concurrent renewal wins; NotFound and Conflict are ignored: idempotent). Until then
//     `kubectl get capturealerts` shows what happened.
//   - MaxActive (--max-alerts) 1000: a firing alert that is not already active is refused
//     (counted in podcap_alerts_refused_total{reason="max_alerts"}, logged at most once a
//     minute, no object written) when this agent sees MaxActive active alerts (its cache plus
//     its own applies not yet in the cache). Renewals and resolves of known alerts are never
//     refused. MaxObjects (default 2×MaxActive) bounds the objects including those awaiting
//     deletion, so churn cannot grow them either. Each agent enforces the bound on its own
//     view: agents recording concurrently can overshoot it by what the others wrote in the
//     moment before their caches saw it.
//   - A resolved (or already ended) alert updates its object if there is one, so that every
//     agent learns the resolve, and is never created: an object would only say "nothing to
//     capture" and, in a storm of resolves for alerts refused or collected earlier, cost
//     writes and objects for nothing. The object is looked up in the cache, then with a GET
//     (the cache may not have seen an object another agent created a moment ago).
//
// RBAC (deploy/alert-rbac.yaml): get, list, watch (informer and lookup), create and patch
// (server-side apply), delete (garbage collection) on capturealerts.podcap.io in the agent's
// namespace only.
//
// API errors: Record returns the first error (the webhook answers 503 and Alertmanager
// retries the whole notification, which is idempotent), except a 422 Invalid (the object is
// over the CRD's bounds: refused and counted, retrying cannot help). The informer retries by
// itself (the last known objects stay in use meanwhile); garbage collection logs and tries
// again next round.
//
// Requests: Record writes a notification's alerts up to 8 at a time (one apply each; an ended
// alert the cache does not know costs one GET instead). One after the other, a notification of
// 200 alerts outlasted the webhook's 5 s on a busy API server, and Alertmanager's retries
// wrote the same alerts again and never got through. A retry now costs nothing for what the
// first try wrote: an alert the cached object already holds, written less than 30 s ago, is
// recorded without a request (podcap_alerts_unchanged_total). A storm of 1,000 alerts in 10 s
// is 100 requests a second on the receiving agent and a notification holds up to
// Limits.MaxAlerts (200): the store's client needs QPS ≥ 100 and Burst ≥ 200 (client-go's
// default 5/10 would take 200 s).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/podcap/podcap/policy"
)

// FieldManager is the server-side apply field manager of every write of the store.
const FieldManager = "podcap-agent"

// Defaults of StoreOptions; see the comment at the top of store.go for how they relate.
const (
	DefaultAlertTTL       = 6 * time.Hour
	DefaultAlertRetention = time.Hour
	DefaultMaxActive      = 1000
	DefaultGCInterval     = 2 * time.Minute
)

// refusedLogEvery rate-limits the log line about refused alerts.
const refusedLogEvery = time.Minute

// pendingFor is how long an apply of this store counts towards the bounds before the
// informer has delivered its object.
const pendingFor = time.Minute

// StoreOptions configure a Store. Zero values take the defaults.
type StoreOptions struct {
	Namespace  string        // of the CaptureAlert objects: the agent's; required
	Node       string        // this agent's node, written as status.receivedBy; required
	MaxActive  int           // --max-alerts; default 1000
	MaxObjects int           // objects including those awaiting deletion; default 2×MaxActive
	TTL        time.Duration // --alert-ttl; default 6h
	Retention  time.Duration // inactive objects are deleted after this; default 1h
	GCInterval time.Duration // between garbage collections (jittered +50%); default 2m
	Clock      clock.Clock   // default: the real clock
	Logger     klog.Logger   // default: klog.Background()
	// Registerer takes the store's metrics; default: a private registry (not exported).
	Registerer prometheus.Registerer
	// OnChange is called, from one goroutine of Run, whenever the set of active alerts
	// changes: an object added, renewed with other fields, resolved or deleted, and when an
	// alert expires (endsAt or TTL passed). Once after the cache synced, too.
	OnChange func()
}

// Store records alerts as CaptureAlert objects and serves the active ones from an informer.
type Store struct {
	client   dynamic.Interface
	o        StoreOptions
	clock    clock.Clock
	log      klog.Logger
	metrics  *storeMetrics
	factory  dynamicinformer.DynamicSharedInformerFactory
	informer cache.SharedIndexInformer
	synced   atomic.Bool
	kick     chan struct{} // capacity 1: the entries changed, recompute the active set

	mu sync.Mutex
	// mu protects the fields below.
	entries      map[string]*entry    // by object name (the fingerprint)
	seq          uint64               // incremented whenever entries change
	pending      map[string]time.Time // names applied by Record, not yet delivered by the informer
	active       activeSet            // last computed by activeLocked
	refusedSince int                  // refusals not yet logged
	refusedLog   time.Time            // when refusals were last logged
}

var (
	_ Recorder = (*Store)(nil)
	// agent.AlertSource, which this package cannot import.
	_ interface {
		Active(now time.Time) ([]policy.Alert, string)
	} = (*Store)(nil)
)

// NewStore returns a Store over client in o.Namespace; Run starts it.
func NewStore(client dynamic.Interface, o StoreOptions) (*Store, error) {
	if client == nil {
		return nil, errors.New("capturealert store: no API client")
	}
	if o.Namespace == "" || o.Node == "" {
		return nil, errors.New("capturealert store: namespace and node are required")
	}
	if o.MaxActive <= 0 {
		o.MaxActive = DefaultMaxActive
	}
	if o.MaxObjects <= 0 {
		o.MaxObjects = 2 * o.MaxActive
	}
	if o.MaxObjects < o.MaxActive {
		return nil, fmt.Errorf("capturealert store: max objects %d below max active alerts %d", o.MaxObjects, o.MaxActive)
	}
	if o.TTL <= 0 {
		o.TTL = DefaultAlertTTL
	}
	if o.Retention <= 0 {
		o.Retention = DefaultAlertRetention
	}
	if o.GCInterval <= 0 {
		o.GCInterval = DefaultGCInterval
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger.GetSink() == nil {
		o.Logger = klog.Background()
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	s := &Store{
		client:  client,
		o:       o,
		clock:   o.Clock,
		log:     o.Logger.WithValues("namespace", o.Namespace),
		kick:    make(chan struct{}, 1),
		entries: map[string]*entry{},
		pending: map[string]time.Time{},
	}
	var err error
	s.metrics, err = newStoreMetrics(o.Registerer,
		func() float64 { return float64(s.countActive(s.clock.Now())) },
		func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(len(s.entries)) })
	if err != nil {
		return nil, fmt.Errorf("capturealert store metrics: %w", err)
	}
	s.factory = dynamicinformer.NewFilteredDynamicSharedInformerFactory(client, 0, o.Namespace, nil)
	s.informer = s.factory.ForResource(CaptureAlertGVR).Informer()
	// the cache keeps what the handlers convert from; managedFields are half of an object
	if err := s.informer.SetTransform(stripManagedFields); err != nil {
		return nil, fmt.Errorf("capturealert informer: %w", err)
	}
	if _, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.upsert,
		UpdateFunc: func(_, obj any) { s.upsert(obj) },
		DeleteFunc: s.remove,
	}); err != nil {
		return nil, fmt.Errorf("capturealert informer: %w", err)
	}
	return s, nil
}

func stripManagedFields(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		u.SetManagedFields(nil)
	}
	return obj, nil
}

// Synced reports whether the informer has listed the objects once (readiness).
func (s *Store) Synced() bool { return s.synced.Load() }

// Run starts the informer, waits for its first list, then calls OnChange as the active set
// changes (informer events and expiries, on a timer of the injected clock) and collects
// garbage every GCInterval, until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	ctx = klog.NewContext(ctx, s.log)
	s.factory.Start(ctx.Done())
	defer s.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("capturealert cache did not sync")
	}
	s.synced.Store(true)
	s.log.Info("CaptureAlert cache synced", "objects", s.countObjects())
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.collectLoop(ctx) })
	s.watchLoop(ctx)
	return nil
}

// watchLoop calls OnChange whenever the active set's version changes, waking up on informer
// events and at the next expiry.
func (s *Store) watchLoop(ctx context.Context) {
	var last string // no version is "": the first round always reports
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := s.clock.Now()
		_, version, until := s.activeAt(now)
		if version != last {
			if last != "" {
				s.metrics.changes.Inc()
			}
			last = version
			if s.o.OnChange != nil {
				s.o.OnChange()
			}
		}
		var expired <-chan time.Time
		if !until.IsZero() {
			// the clock moved on while OnChange ran: the expiry may have passed already
			d := until.Sub(s.clock.Now())
			if d <= 0 {
				continue
			}
			if timer == nil {
				timer = s.clock.NewTimer(d)
			} else {
				timer.Stop()
				timer.Reset(d)
			}
			expired = timer.C()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-expired:
		}
	}
}

// Active returns the alerts active at now, sorted by fingerprint, and the version of that set:
// a hash over the fields a policy sees of every member, so a renewal that changes nothing else
// keeps the version. The slice is the caller's; the maps in it are the store's own copies
// (never the informer cache's), shared between callers and never modified: do not modify them
// (policy.BuildInput copies them).
func (s *Store) Active(now time.Time) ([]policy.Alert, string) {
	alerts, version, _ := s.activeAt(now)
	return alerts, version
}

func (s *Store) activeAt(now time.Time) ([]policy.Alert, string, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.active.valid(s.seq, now) {
		alerts, version, until := computeActive(s.entries, now, s.o.TTL)
		s.active = activeSet{seq: s.seq, from: now, until: until, alerts: alerts, version: version}
	}
	return append([]policy.Alert(nil), s.active.alerts...), s.active.version, s.active.until
}

func (s *Store) countActive(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.countActiveLocked(now)
}

func (s *Store) countActiveLocked(now time.Time) int {
	n := 0
	for _, e := range s.entries {
		if e.active(now, s.o.TTL) {
			n++
		}
	}
	return n
}

func (s *Store) countObjects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// upsert is the informer's add and update handler.
func (s *Store) upsert(obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	e, err := toEntry(u)
	s.mu.Lock()
	delete(s.pending, u.GetName())
	if err != nil {
		_, known := s.entries[u.GetName()]
		delete(s.entries, u.GetName())
		if known {
			s.seq++
		}
	} else {
		s.entries[u.GetName()] = e
		s.seq++
	}
	s.mu.Unlock()
	if err != nil {
		s.metrics.invalidObjects.Inc()
		s.log.Error(err, "Ignoring CaptureAlert object", "name", u.GetName(), "resourceVersion", u.GetResourceVersion())
	}
	s.notify()
}

// remove is the informer's delete handler.
func (s *Store) remove(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	s.mu.Lock()
	if _, known := s.entries[u.GetName()]; known {
		delete(s.entries, u.GetName())
		s.seq++
	}
	s.mu.Unlock()
	s.notify()
}

func (s *Store) notify() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// jittered returns d plus up to 50%, so that agents started together do not collect at once.
func jittered(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/2+1))
}
