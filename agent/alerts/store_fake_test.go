package alerts

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
)

const testNS = "podcap-system"

// fakeAPI is client-go's dynamic fake with what it lacks for the store: server-side apply
// that creates a missing object (its tracker's Apply only updates), and resourceVersions and
// UIDs on the objects. It is for unit speed; test/integration/capturealert_test.go runs the
// store against the real API server.
type fakeAPI struct {
	*dynamicfake.FakeDynamicClient
	rv      atomic.Int64
	applies atomic.Int64

	mu sync.Mutex
	// mu protects the field below.
	failApply error // returned by every apply while set
}

func newFakeAPI(t *testing.T, objs ...runtime.Object) *fakeAPI {
	t.Helper()
	f := &fakeAPI{FakeDynamicClient: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{CaptureAlertGVR: "CaptureAlertList"}, objs...)}
	tracker := f.Tracker()
	f.PrependReactor("patch", "capturealerts", func(action k8stesting.Action) (bool, runtime.Object, error) {
		pa := action.(k8stesting.PatchActionImpl)
		if pa.GetPatchType() != types.ApplyPatchType {
			return false, nil, nil
		}
		f.applies.Add(1)
		f.mu.Lock()
		fail := f.failApply
		f.mu.Unlock()
		if fail != nil {
			return true, nil, fail
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(pa.GetPatch(), &obj.Object); err != nil {
			return true, nil, err
		}
		obj.SetResourceVersion(strconv.FormatInt(f.rv.Add(1), 10))
		old, err := tracker.Get(CaptureAlertGVR, pa.GetNamespace(), pa.GetName())
		switch {
		case apierrors.IsNotFound(err):
			obj.SetUID(types.UID("uid-" + pa.GetName()))
			err = tracker.Create(CaptureAlertGVR, obj, pa.GetNamespace())
		case err == nil:
			obj.SetUID(old.(*unstructured.Unstructured).GetUID())
			err = tracker.Update(CaptureAlertGVR, obj, pa.GetNamespace())
		}
		return true, obj, err
	})
	return f
}

func (f *fakeAPI) setFailApply(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failApply = err
}

// object returns the stored object name, or nil.
func (f *fakeAPI) object(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	obj, err := f.Tracker().Get(CaptureAlertGVR, testNS, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*unstructured.Unstructured)
}

func (f *fakeAPI) count(t *testing.T) int {
	t.Helper()
	l, err := f.Tracker().List(CaptureAlertGVR, CaptureAlertGVR.GroupVersion().WithKind("CaptureAlert"), testNS)
	if err != nil {
		t.Fatal(err)
	}
	return len(l.(*unstructured.UnstructuredList).Items)
}

// harness is a running Store over a fakeAPI with a fake clock.
type harness struct {
	api     *fakeAPI
	store   *Store
	clock   *clocktesting.FakeClock
	reg     *prometheus.Registry
	changes chan int // OnChange: the number of active alerts when it was called
}

var t0 = time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)

func startStore(t *testing.T, api *fakeAPI, o StoreOptions) *harness {
	t.Helper()
	return startStoreOver(t, api, api, o)
}

// startStoreOver is startStore with the store's requests going through client, which wraps
// api.
func startStoreOver(t *testing.T, api *fakeAPI, client dynamic.Interface, o StoreOptions) *harness {
	t.Helper()
	h := &harness{api: api, clock: clocktesting.NewFakeClock(t0), reg: prometheus.NewRegistry(), changes: make(chan int, 100)}
	o.Namespace, o.Node, o.Clock, o.Registerer = testNS, "node-a", h.clock, h.reg
	o.OnChange = func() {
		alerts, _ := h.store.Active(h.clock.Now())
		h.changes <- len(alerts)
	}
	s, err := NewStore(client, o)
	if err != nil {
		t.Fatal(err)
	}
	h.store = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitUntil(t, "cache synced", s.Synced)
	select { // the first round after the sync reports the set, whatever it holds
	case <-h.changes:
	case <-time.After(10 * time.Second):
		t.Fatal("OnChange was not called after the sync")
	}
	return h
}

// waitUntil polls cond every millisecond for up to 10 s (real time: the informer's).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitChange waits for an OnChange call that saw n active alerts (skipping earlier calls).
func (h *harness) waitChange(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-h.changes:
			if got == n {
				return
			}
		case <-deadline:
			t.Fatalf("OnChange was not called with %d active alerts", n)
		}
	}
}

// noChange fails if OnChange was called since the last waitChange.
func (h *harness) noChange(t *testing.T) {
	t.Helper()
	select {
	case <-h.changes:
		t.Fatal("OnChange called, want no change of the active set")
	default:
	}
}

// waitEntry waits until the store's cache holds name at the object's current version.
func (h *harness) waitEntry(t *testing.T, name string) {
	t.Helper()
	waitUntil(t, "the informer to deliver "+name, func() bool {
		obj := h.api.object(t, name)
		h.store.mu.Lock()
		defer h.store.mu.Unlock()
		e, ok := h.store.entries[name]
		if obj == nil {
			return !ok
		}
		return ok && e.resourceVersion == obj.GetResourceVersion()
	})
}

func firing(fp, alertname string) Alert {
	return Alert{
		Fingerprint: fp, Status: StatusFiring,
		Labels:      map[string]string{"alertname": alertname, "namespace": "shop", "pod": "cart-0"},
		Annotations: map[string]string{"summary": "retransmits"},
		StartsAt:    t0.Add(-time.Minute), GeneratorURL: "http://prometheus:9090/graph",
	}
}

func resolved(a Alert, at time.Time) Alert {
	a.Status, a.EndsAt = StatusResolved, at
	return a
}

func notification(alerts ...Alert) Notification {
	return Notification{Receiver: "podcap", GroupKey: `{}:{alertname="X"}`, Status: StatusFiring, Alerts: alerts}
}

// fp returns the i-th test fingerprint.
func fp(i int) string { return fmt.Sprintf("%016x", 0xa1000+i) }
