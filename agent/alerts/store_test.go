package alerts

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestRecordCreatesThenRenews(t *testing.T) {
	h := startStore(t, newFakeAPI(t), StoreOptions{})
	a := firing(fp(1), "HighTCPRetransmits")
	r, err := h.store.Record(t.Context(), notification(a))
	if err != nil || r != (Recorded{Recorded: 1}) {
		t.Fatalf("Record: %+v, %v", r, err)
	}
	obj := h.api.object(t, a.Fingerprint)
	if obj == nil {
		t.Fatal("no object")
	}
	for path, want := range map[string]string{
		"spec.fingerprint": a.Fingerprint, "spec.status": "firing", "spec.labels.alertname": "HighTCPRetransmits",
		"spec.annotations.summary": "retransmits", "spec.startsAt": "2026-12-06T04:59:00Z",
		"spec.generatorURL": a.GeneratorURL, "spec.receiver": "podcap", "spec.groupKey": `{}:{alertname="X"}`,
		"status.lastNotifiedAt": "2026-12-06T05:00:00Z", "status.receivedBy": "node-a",
	} {
		if got, _, _ := unstructured.NestedString(obj.Object, strings.Split(path, ".")...); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if _, found, _ := unstructured.NestedString(obj.Object, "spec", "endsAt"); found {
		t.Error("spec.endsAt set for a firing alert without an end")
	}
	h.waitChange(t, 1)
	alerts, v1 := h.store.Active(h.clock.Now())
	if len(alerts) != 1 || alerts[0].Fingerprint != a.Fingerprint || alerts[0].Labels["pod"] != "cart-0" || alerts[0].GeneratorURL != a.GeneratorURL {
		t.Fatalf("Active = %+v", alerts)
	}

	// the same notification later: the same object, renewed; the set a policy sees is the same
	h.clock.Step(time.Minute)
	if r, err := h.store.Record(t.Context(), notification(a)); err != nil || r.Recorded != 1 {
		t.Fatalf("Record again: %+v, %v", r, err)
	}
	if n := h.api.count(t); n != 1 {
		t.Fatalf("%d objects, want 1", n)
	}
	if got, _, _ := unstructured.NestedString(h.api.object(t, a.Fingerprint).Object, "status", "lastNotifiedAt"); got != "2026-12-06T05:01:00Z" {
		t.Errorf("lastNotifiedAt = %s after the renewal", got)
	}
	h.waitEntry(t, a.Fingerprint)
	if _, v2 := h.store.Active(h.clock.Now()); v2 != v1 {
		t.Errorf("version changed by a renewal with the same fields: %s → %s", v1, v2)
	}
	h.noChange(t)

	// renewed with another annotation: a new version
	a.Annotations = map[string]string{"summary": "worse"}
	if _, err := h.store.Record(t.Context(), notification(a)); err != nil {
		t.Fatal(err)
	}
	h.waitChange(t, 1)
	if alerts, v3 := h.store.Active(h.clock.Now()); v3 == v1 || alerts[0].Annotations["summary"] != "worse" {
		t.Errorf("after a changed annotation: version %s (was %s), %+v", v3, v1, alerts)
	}
	if got := testutil.ToFloat64(h.store.metrics.recorded.WithLabelValues(StatusFiring)); got != 3 {
		t.Errorf("recorded{firing} = %v, want 3", got)
	}
}

func TestActiveCopiesOut(t *testing.T) {
	h := startStore(t, newFakeAPI(t), StoreOptions{})
	if _, err := h.store.Record(t.Context(), notification(firing(fp(1), "A"), firing(fp(2), "B"))); err != nil {
		t.Fatal(err)
	}
	h.waitEntry(t, fp(1))
	h.waitEntry(t, fp(2))
	alerts, _ := h.store.Active(h.clock.Now())
	if len(alerts) != 2 || alerts[0].Fingerprint != fp(1) || alerts[1].Fingerprint != fp(2) {
		t.Fatalf("Active = %+v, want both sorted by fingerprint", alerts)
	}
	alerts[0] = alerts[1]
	if again, _ := h.store.Active(h.clock.Now()); again[0].Fingerprint != fp(1) {
		t.Error("a caller's change of the returned slice reached the store")
	}
	// the maps are the store's own copies, not the informer cache's
	cached, _, _ := h.store.informer.GetStore().GetByKey(testNS + "/" + fp(1))
	labels, _, _ := unstructured.NestedMap(cached.(*unstructured.Unstructured).Object, "spec", "labels")
	labels["alertname"] = "changed in the cache"
	if again, _ := h.store.Active(h.clock.Now()); again[0].Labels["alertname"] != "A" {
		t.Error("Active hands out the informer cache's maps")
	}
	labels["alertname"] = "A"
}

func TestExpiry(t *testing.T) {
	h := startStore(t, newFakeAPI(t), StoreOptions{TTL: time.Hour})
	ends := firing(fp(1), "Ends")
	ends.EndsAt = t0.Add(10 * time.Minute)
	renewed := firing(fp(2), "Renewed")
	if _, err := h.store.Record(t.Context(), notification(ends, renewed)); err != nil {
		t.Fatal(err)
	}
	h.waitChange(t, 2)
	if alerts, _ := h.store.Active(h.clock.Now()); len(alerts) != 2 {
		t.Fatalf("Active = %+v, want 2", alerts)
	}

	// endsAt passes: the timer of the injected clock reports the change
	stepUntilChange(t, h, 10*time.Minute, 1)
	if alerts, _ := h.store.Active(h.clock.Now()); len(alerts) != 1 || alerts[0].Fingerprint != fp(2) {
		t.Fatalf("after endsAt: Active = %+v", alerts)
	}
	// not renewed for the TTL: inactive
	stepUntilChange(t, h, 50*time.Minute, 0)
	if alerts, _ := h.store.Active(h.clock.Now()); len(alerts) != 0 {
		t.Fatalf("after the TTL: Active = %+v", alerts)
	}
	if got := testutil.ToFloat64(h.store.metrics.changes); got < 2 {
		t.Errorf("active_changes_total = %v, want ≥ 2", got)
	}
}

// stepUntilChange steps the fake clock by d, then by a second at a time until OnChange is
// called with n active alerts (the store arms its timer asynchronously: a step that came
// before the timer was armed does not fire it).
func stepUntilChange(t *testing.T, h *harness, d time.Duration, n int) {
	t.Helper()
	h.clock.Step(d)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case got := <-h.changes:
			if got == n {
				return
			}
			continue
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("OnChange was not called with %d active alerts after the expiry", n)
		}
		h.clock.Step(time.Second)
	}
}

func TestResolve(t *testing.T) {
	h := startStore(t, newFakeAPI(t), StoreOptions{})
	a := firing(fp(1), "A")
	if _, err := h.store.Record(t.Context(), notification(a)); err != nil {
		t.Fatal(err)
	}
	h.waitChange(t, 1)

	h.clock.Step(time.Minute)
	r, err := h.store.Record(t.Context(), notification(resolved(a, h.clock.Now())))
	if err != nil || r != (Recorded{Recorded: 1}) {
		t.Fatalf("Record resolve: %+v, %v", r, err)
	}
	h.waitChange(t, 0)
	if alerts, _ := h.store.Active(h.clock.Now()); len(alerts) != 0 {
		t.Fatalf("Active after resolve = %+v", alerts)
	}
	obj := h.api.object(t, a.Fingerprint)
	if s, _, _ := unstructured.NestedString(obj.Object, "spec", "status"); s != "resolved" {
		t.Errorf("status %q after resolve", s)
	}

	// a resolve for an alert nobody recorded: looked up (the cache may lag), not created
	applies := h.api.applies.Load()
	unknown := resolved(firing(fp(2), "B"), h.clock.Now())
	r, err = h.store.Record(t.Context(), notification(unknown))
	if err != nil || r != (Recorded{}) {
		t.Fatalf("Record unknown resolve: %+v, %v", r, err)
	}
	if h.api.object(t, fp(2)) != nil || h.api.applies.Load() != applies {
		t.Error("a resolve created an object")
	}
	if got := testutil.ToFloat64(h.store.metrics.unknownEnded); got != 1 {
		t.Errorf("unknown_ended_total = %v, want 1", got)
	}
}

func TestBounds(t *testing.T) {
	h := startStore(t, newFakeAPI(t), StoreOptions{MaxActive: 2, MaxObjects: 3})
	// in one call: the third is refused by what the call itself added, not yet in the cache
	r, err := h.store.Record(t.Context(), notification(firing(fp(1), "A"), firing(fp(2), "B"), firing(fp(3), "C")))
	if err != nil || r != (Recorded{Recorded: 2, Refused: 1}) {
		t.Fatalf("Record: %+v, %v", r, err)
	}
	if h.api.object(t, fp(3)) != nil || h.api.count(t) != 2 {
		t.Fatalf("refused alert has an object (%d objects)", h.api.count(t))
	}
	if got := testutil.ToFloat64(h.store.metrics.refused.WithLabelValues(RefusedMaxAlerts)); got != 1 {
		t.Errorf("refused{max_alerts} = %v, want 1", got)
	}
	h.waitEntry(t, fp(1))
	h.waitEntry(t, fp(2))
	// renewals at the bound are not refused; a new alert still is
	r, err = h.store.Record(t.Context(), notification(firing(fp(1), "A"), firing(fp(4), "D")))
	if err != nil || r != (Recorded{Recorded: 1, Refused: 1}) {
		t.Fatalf("Record at the bound: %+v, %v", r, err)
	}
	// one resolves: room for one active alert, and one object more (3)
	if _, err := h.store.Record(t.Context(), notification(resolved(firing(fp(2), "B"), h.clock.Now()))); err != nil {
		t.Fatal(err)
	}
	h.waitEntry(t, fp(2))
	if r, err := h.store.Record(t.Context(), notification(firing(fp(4), "D"))); err != nil || r.Recorded != 1 {
		t.Fatalf("Record after a resolve: %+v, %v", r, err)
	}
	h.waitEntry(t, fp(4))
	// another resolves: room for an active alert, but 3 objects (one resolved awaiting deletion)
	if _, err := h.store.Record(t.Context(), notification(resolved(firing(fp(4), "D"), h.clock.Now()))); err != nil {
		t.Fatal(err)
	}
	h.waitEntry(t, fp(4))
	r, err = h.store.Record(t.Context(), notification(firing(fp(5), "E")))
	if err != nil || r != (Recorded{Refused: 1}) {
		t.Fatalf("Record over max objects: %+v, %v", r, err)
	}
	if got := testutil.ToFloat64(h.store.metrics.refused.WithLabelValues(RefusedMaxObjects)); got != 1 {
		t.Errorf("refused{max_objects} = %v, want 1", got)
	}
	// a resolved object firing again needs no new object
	if r, err := h.store.Record(t.Context(), notification(firing(fp(2), "B"))); err != nil || r.Recorded != 1 {
		t.Fatalf("Record refiring: %+v, %v", r, err)
	}
}

func TestRecordErrors(t *testing.T) {
	api := newFakeAPI(t)
	h := startStore(t, api, StoreOptions{MaxActive: 2})
	// transient: returned, counted, the reservation released
	api.setFailApply(apierrors.NewServiceUnavailable("etcd is down"))
	r, err := h.store.Record(t.Context(), notification(firing(fp(1), "A"), firing(fp(2), "B")))
	if !apierrors.IsServiceUnavailable(err) || r != (Recorded{}) {
		t.Fatalf("Record: %+v, %v; want the API error", r, err)
	}
	// A's and B's applies may both be in flight when the first fails: each failure counts
	if got := testutil.ToFloat64(h.store.metrics.errors.WithLabelValues(opApply)); got < 1 || got > 2 {
		t.Errorf("errors{apply} = %v, want 1 or 2", got)
	}
	// permanent: refused and counted, not an error (a retry cannot help)
	api.setFailApply(apierrors.NewInvalid(schema.GroupKind{Group: "podcap.io", Kind: "CaptureAlert"}, fp(1),
		field.ErrorList{field.TooLong(field.NewPath("spec", "annotations", "x"), "", 8192)}))
	r, err = h.store.Record(t.Context(), notification(firing(fp(1), "A")))
	if err != nil || r != (Recorded{Refused: 1}) {
		t.Fatalf("Record invalid: %+v, %v", r, err)
	}
	api.setFailApply(nil)
	// nothing was reserved for good: both fit under MaxActive 2
	if r, err := h.store.Record(t.Context(), notification(firing(fp(1), "A"), firing(fp(2), "B"))); err != nil || r.Recorded != 2 {
		t.Fatalf("Record after the errors: %+v, %v", r, err)
	}
	// a caller that skipped Decode
	bad := firing("NOT-HEX", "A")
	if _, err := h.store.Record(t.Context(), notification(bad)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Record of a bad fingerprint: %v, want ErrInvalid", err)
	}
}

func TestCollectGarbage(t *testing.T) {
	h := startStore(t, newFakeAPI(t), StoreOptions{TTL: time.Hour, Retention: 30 * time.Minute, GCInterval: 24 * time.Hour})
	if _, err := h.store.Record(t.Context(), notification(firing(fp(1), "Resolves"), firing(fp(2), "Expires"), firing(fp(3), "Renewed"))); err != nil {
		t.Fatal(err)
	}
	h.clock.Step(10 * time.Minute)
	if _, err := h.store.Record(t.Context(), notification(resolved(firing(fp(1), "Resolves"), h.clock.Now()))); err != nil {
		t.Fatal(err)
	}
	h.clock.Step(40 * time.Minute) // 05:50: fp1 resolved 40m ago; fp2 and fp3 still active
	if _, err := h.store.Record(t.Context(), notification(firing(fp(3), "Renewed"))); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		h.waitEntry(t, fp(i))
	}
	if n, err := h.store.CollectGarbage(t.Context()); err != nil || n != 1 || h.api.object(t, fp(1)) != nil {
		t.Fatalf("CollectGarbage: %d, %v; fp1 left: %v", n, err, h.api.object(t, fp(1)) != nil)
	}
	h.waitEntry(t, fp(1))
	h.clock.Step(70 * time.Minute) // 07:00: fp2 expired at 06:00 (60m ago), fp3 at 06:50 (10m ago)
	if n, err := h.store.CollectGarbage(t.Context()); err != nil || n != 1 || h.api.object(t, fp(2)) != nil || h.api.object(t, fp(3)) == nil {
		t.Fatalf("CollectGarbage after the TTL: %d, %v", n, err)
	}
	h.waitEntry(t, fp(2))
	// nothing left to do: idempotent
	if n, err := h.store.CollectGarbage(t.Context()); err != nil || n != 0 {
		t.Fatalf("CollectGarbage again: %d, %v", n, err)
	}
	if got := testutil.ToFloat64(h.store.metrics.deleted); got != 2 {
		t.Errorf("objects_deleted_total = %v, want 2", got)
	}
	// Run's loop collects too, on the injected clock: fp3 expired at 06:50, GC every 24h-36h
	h.clock.Step(36 * time.Hour)
	waitUntil(t, "the loop's garbage collection", func() bool {
		h.clock.Step(time.Second) // in case the step came before the loop's timer
		return h.api.object(t, fp(3)) == nil
	})
}

func TestInvalidObjectIgnored(t *testing.T) {
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": captureAlertAPIVersion, "kind": captureAlertKind,
		"metadata": map[string]any{"name": "by-hand", "namespace": testNS},
		"spec":     map[string]any{"fingerprint": "by-hand", "status": "firing"},
	}}
	good := toObject(testNS, "node-b", notification(), firing(fp(1), "A"), t0)
	h := startStore(t, newFakeAPI(t, bad, good), StoreOptions{})
	if alerts, _ := h.store.Active(h.clock.Now()); len(alerts) != 1 || alerts[0].Fingerprint != fp(1) {
		t.Fatalf("Active = %+v, want only the valid object", alerts)
	}
	if got := testutil.ToFloat64(h.store.metrics.invalidObjects); got != 1 {
		t.Errorf("objects_invalid_total = %v, want 1", got)
	}
}

func TestStoreMetricsLint(t *testing.T) {
	h := startStore(t, newFakeAPI(t), StoreOptions{})
	if _, err := h.store.Record(t.Context(), notification(firing(fp(1), "A"))); err != nil {
		t.Fatal(err)
	}
	h.waitEntry(t, fp(1))
	problems, err := testutil.GatherAndLint(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	want := `
# HELP podcap_alerts_active Active alerts in this agent's CaptureAlert cache (firing, not ended, renewed within --alert-ttl).
# TYPE podcap_alerts_active gauge
podcap_alerts_active 1
# HELP podcap_alerts_refused_total Alerts this agent did not record, by reason: max_alerts (--max-alerts active alerts), max_objects (CaptureAlert objects awaiting deletion), invalid (refused by the API server's schema).
# TYPE podcap_alerts_refused_total counter
podcap_alerts_refused_total{reason="invalid"} 0
podcap_alerts_refused_total{reason="max_alerts"} 0
podcap_alerts_refused_total{reason="max_objects"} 0
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "podcap_alerts_active", "podcap_alerts_refused_total"); err != nil {
		t.Error(err)
	}
}

func TestNewStoreOptions(t *testing.T) {
	api := newFakeAPI(t)
	for name, o := range map[string]StoreOptions{
		"no namespace":         {Node: "n"},
		"no node":              {Namespace: "ns"},
		"objects below active": {Namespace: "ns", Node: "n", MaxActive: 10, MaxObjects: 5},
	} {
		if _, err := NewStore(api, o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := NewStore(nil, StoreOptions{Namespace: "ns", Node: "n"}); err == nil {
		t.Error("nil client: no error")
	}
	s, err := NewStore(api, StoreOptions{Namespace: "ns", Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if s.o.MaxActive != DefaultMaxActive || s.o.MaxObjects != 2*DefaultMaxActive || s.o.TTL != DefaultAlertTTL ||
		s.o.Retention != DefaultAlertRetention || s.o.GCInterval != DefaultGCInterval {
		t.Errorf("defaults: %+v", s.o)
	}
}
