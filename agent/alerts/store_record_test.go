package alerts

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// TestRecordRetryWritesNothing: a notification sent again (Alertmanager's retry after a 503)
// within unchangedFor costs no request; a changed alert is written at once, and an unchanged
// one again once unchangedFor has passed (lastNotifiedAt moves on).
func TestRecordRetryWritesNothing(t *testing.T) {
	h := startStore(t, newFakeAPI(t), StoreOptions{})
	a, b := firing(fp(1), "A"), firing(fp(2), "B")
	if _, err := h.store.Record(t.Context(), notification(a, b)); err != nil {
		t.Fatal(err)
	}
	h.waitEntry(t, a.Fingerprint)
	h.waitEntry(t, b.Fingerprint)
	applies := h.api.applies.Load()

	h.clock.Step(10 * time.Second)
	if r, err := h.store.Record(t.Context(), notification(a, b)); err != nil || r != (Recorded{Recorded: 2}) {
		t.Fatalf("Record again: %+v, %v", r, err)
	}
	if got := h.api.applies.Load() - applies; got != 0 {
		t.Errorf("%d applies for a notification the objects already hold, want 0", got)
	}
	if got := testutil.ToFloat64(h.store.metrics.unchanged); got != 2 {
		t.Errorf("unchanged = %v, want 2", got)
	}

	b.Annotations = map[string]string{"summary": "worse"}
	if _, err := h.store.Record(t.Context(), notification(a, b)); err != nil {
		t.Fatal(err)
	}
	if got := h.api.applies.Load() - applies; got != 1 {
		t.Errorf("%d applies after B changed, want 1 (B's)", got)
	}

	h.clock.Step(unchangedFor)
	if _, err := h.store.Record(t.Context(), notification(a)); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructured.NestedString(h.api.object(t, a.Fingerprint).Object, "status", "lastNotifiedAt"); got != "2026-12-06T05:00:40Z" {
		t.Errorf("lastNotifiedAt = %s, want the renewal %s after the first write", got, 10*time.Second+unchangedFor)
	}
}

// TestRecordWritesInParallel: a notification's applies run recordParallel at a time, never
// more (a storm's notification of 200 alerts must not take 200 round trips in a row).
func TestRecordWritesInParallel(t *testing.T) {
	api := newFakeAPI(t)
	c := &gatedClient{Interface: api}
	h := startStoreOver(t, api, c, StoreOptions{})
	var alerts []Alert
	for i := range 3 * recordParallel {
		alerts = append(alerts, firing(fp(i), "Storm"))
	}
	if r, err := h.store.Record(t.Context(), notification(alerts...)); err != nil || r.Recorded != len(alerts) {
		t.Fatalf("Record: %+v, %v", r, err)
	}
	if got := c.most.Load(); got != recordParallel {
		t.Errorf("at most %d applies in flight, want %d", got, recordParallel)
	}
	if n := api.count(t); n != len(alerts) {
		t.Errorf("%d objects, want %d", n, len(alerts))
	}
}

// gatedClient holds each Apply until recordParallel of them were in flight at once (or 2 s
// passed), and records the most in flight. The dynamic fake serialises its reactors, so
// concurrency is measured in front of it.
type gatedClient struct {
	dynamic.Interface
	inFlight, most atomic.Int64
}

func (c *gatedClient) Resource(r schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	return gatedResource{c.Interface.Resource(r), c}
}

type gatedResource struct {
	dynamic.NamespaceableResourceInterface
	c *gatedClient
}

func (r gatedResource) Namespace(ns string) dynamic.ResourceInterface {
	return gatedNamespace{r.NamespaceableResourceInterface.Namespace(ns), r.c}
}

type gatedNamespace struct {
	dynamic.ResourceInterface
	c *gatedClient
}

func (n gatedNamespace) Apply(ctx context.Context, name string, obj *unstructured.Unstructured, o metav1.ApplyOptions, sub ...string) (*unstructured.Unstructured, error) {
	in := n.c.inFlight.Add(1)
	defer n.c.inFlight.Add(-1)
	for most := n.c.most.Load(); in > most && !n.c.most.CompareAndSwap(most, in); most = n.c.most.Load() {
	}
	deadline := time.Now().Add(2 * time.Second)
	for n.c.most.Load() < recordParallel && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	return n.ResourceInterface.Apply(ctx, name, obj, o, sub...)
}

// IsWatchListSemanticsUnSupported passes on the dynamic fake's answer: the informer must not
// ask the fake for a watch-list stream it cannot serve.
func (c *gatedClient) IsWatchListSemanticsUnSupported() bool { return true }
