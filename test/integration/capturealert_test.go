package integration

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2/ktesting"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/podcap/podcap/agent/alerts"
	"github.com/podcap/podcap/policy"
	"github.com/podcap/podcap/test/testbed"
)

const alertNS = "podcap-system"

// runningStore is a CaptureAlert store with the agent's credentials, running until stop.
type runningStore struct {
	*alerts.Store
	reg     *prometheus.Registry
	changes chan struct{}
	stop    func()
}

// startAlertStore runs a Store for node with the agent user's credentials (so the Role is
// what is tested) and waits for its cache; it stops when the test ends, or at stop().
func startAlertStore(t *testing.T, c *testbed.Cluster, node string, o alerts.StoreOptions) *runningStore {
	t.Helper()
	client, err := c.AgentDynamic()
	if err != nil {
		t.Fatal(err)
	}
	rs := &runningStore{reg: prometheus.NewRegistry(), changes: make(chan struct{}, 1000)}
	o.Namespace, o.Node, o.Registerer = alertNS, node, rs.reg
	o.Logger = ktesting.NewLogger(t, ktesting.NewConfig()).WithValues("store", node)
	o.OnChange = func() { rs.changes <- struct{}{} }
	if rs.Store, err = alerts.NewStore(client, o); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rs.Run(ctx) }()
	var once bool
	rs.stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("store %s: Run: %v", node, err)
		}
	}
	t.Cleanup(rs.stop)
	waitFor(t, 30*time.Second, "store "+node+" synced", func() (bool, error) { return rs.Synced(), nil })
	rs.waitChange(t, "the first report after sync")
	return rs
}

func (rs *runningStore) waitChange(t *testing.T, what string) {
	t.Helper()
	select {
	case <-rs.changes:
	case <-time.After(30 * time.Second):
		t.Fatalf("OnChange not called: %s", what)
	}
}

func (rs *runningStore) drain() {
	for {
		select {
		case <-rs.changes:
		default:
			return
		}
	}
}

// fingerprints of rs's active alerts now.
func (rs *runningStore) fingerprints() []string {
	active, _ := rs.Active(time.Now())
	var fps []string
	for _, a := range active {
		fps = append(fps, a.Fingerprint)
	}
	return fps
}

func testAlert(fp, alertname string) alerts.Alert {
	return alerts.Alert{
		Fingerprint: fp, Status: alerts.StatusFiring,
		Labels:      map[string]string{"alertname": alertname, "namespace": "shop", "pod": "cart-0"},
		Annotations: map[string]string{"summary": "retransmits over 1%"},
		StartsAt:    time.Now().Add(-time.Minute).UTC().Truncate(time.Second), GeneratorURL: "http://prometheus:9090/graph?g0.expr=up",
	}
}

func note(as ...alerts.Alert) alerts.Notification {
	return alerts.Notification{Receiver: "podcap", GroupKey: `{}:{alertname="X"}`, Status: alerts.StatusFiring, Alerts: as}
}

func count(t *testing.T, res dynamic.ResourceInterface) int {
	t.Helper()
	l, err := res.List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(l.Items)
}

// TestCaptureAlertShared: what one agent records, another learns; the same notification is one
// object; a resolve reaches every agent; a resolve for an unknown alert creates nothing.
func TestCaptureAlertShared(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	res := alertObjects(t, c)
	// the receiving agent's clock is fake so that a repeat at the same instant is provably a no-op
	fc := clocktesting.NewFakeClock(time.Now())
	a := startAlertStore(t, c, "node-a", alerts.StoreOptions{Clock: fc})
	b := startAlertStore(t, c, "node-b", alerts.StoreOptions{})
	al := testAlert("aa00000000000001", "HighTCPRetransmits")

	r, err := a.Record(ctx, note(al))
	if err != nil || r != (alerts.Recorded{Recorded: 1}) {
		t.Fatalf("Record: %+v, %v", r, err)
	}
	obj, err := res.Get(ctx, al.Fingerprint, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"spec.status": "firing", "spec.labels.alertname": "HighTCPRetransmits", "spec.annotations.summary": "retransmits over 1%",
		"spec.startsAt": al.StartsAt.Format(time.RFC3339Nano), "spec.generatorURL": al.GeneratorURL,
		"status.receivedBy": "node-a", "status.lastNotifiedAt": fc.Now().UTC().Format(time.RFC3339Nano),
	} {
		if got, _, _ := unstructured.NestedString(obj.Object, strings.Split(path, ".")...); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if mf := obj.GetManagedFields(); len(mf) != 1 || mf[0].Manager != alerts.FieldManager || mf[0].Operation != metav1.ManagedFieldsOperationApply {
		t.Errorf("managed fields %+v, want one apply by %s", mf, alerts.FieldManager)
	}
	b.waitChange(t, "node-b learns the alert")
	waitFor(t, 30*time.Second, "node-b's active alerts", func() (bool, error) {
		return slices.Equal(b.fingerprints(), []string{al.Fingerprint}), nil
	})
	active, version := b.Active(time.Now())
	if active[0].Labels["pod"] != "cart-0" || active[0].GeneratorURL != al.GeneratorURL || !active[0].StartsAt.Equal(al.StartsAt) {
		t.Errorf("node-b's alert: %+v", active[0])
	}

	// the same notification at the same instant: the same object, not even a new version
	if r, err := a.Record(ctx, note(al)); err != nil || r.Recorded != 1 {
		t.Fatalf("Record again: %+v, %v", r, err)
	}
	again, err := res.Get(ctx, al.Fingerprint, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.GetResourceVersion() != obj.GetResourceVersion() || count(t, res) != 1 {
		t.Errorf("repeat: resourceVersion %s → %s, %d objects; want unchanged, 1", obj.GetResourceVersion(), again.GetResourceVersion(), count(t, res))
	}
	// a minute later: renewed (lastNotifiedAt), still one object, the policy's view unchanged
	fc.Step(time.Minute)
	if _, err := a.Record(ctx, note(al)); err != nil {
		t.Fatal(err)
	}
	renewed, err := res.Get(ctx, al.Fingerprint, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if last, _, _ := unstructured.NestedString(renewed.Object, "status", "lastNotifiedAt"); renewed.GetResourceVersion() == obj.GetResourceVersion() ||
		last != fc.Now().UTC().Format(time.RFC3339Nano) || count(t, res) != 1 {
		t.Errorf("renewal: resourceVersion %s → %s, lastNotifiedAt %s, %d objects", obj.GetResourceVersion(), renewed.GetResourceVersion(), last, count(t, res))
	}
	if _, v := b.Active(time.Now()); v != version {
		t.Errorf("node-b's version changed by a renewal with the same fields")
	}

	// resolved through node-b this time: both learn it
	a.drain()
	if r, err := b.Record(ctx, note(resolvedAt(al, time.Now()))); err != nil || r.Recorded != 1 {
		t.Fatalf("Record resolve: %+v, %v", r, err)
	}
	for _, s := range []*runningStore{a, b} {
		waitFor(t, 30*time.Second, "the resolve on both stores", func() (bool, error) { return len(s.fingerprints()) == 0, nil })
	}
	a.waitChange(t, "node-a learns the resolve")

	// a resolve for an alert never recorded: no object
	if r, err := a.Record(ctx, note(resolvedAt(testAlert("aa00000000000002", "Other"), time.Now()))); err != nil || r != (alerts.Recorded{}) {
		t.Fatalf("Record unknown resolve: %+v, %v", r, err)
	}
	if _, err := res.Get(ctx, "aa00000000000002", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("unknown resolve: get = %v, want NotFound", err)
	}
	if got := value(t, a.reg, "podcap_alerts_unknown_ended_total"); got != 1 {
		t.Errorf("unknown_ended_total = %v", got)
	}
}

func resolvedAt(a alerts.Alert, at time.Time) alerts.Alert {
	a.Status, a.EndsAt = alerts.StatusResolved, at.UTC()
	return a
}

// value returns the sum of metric name's series in reg.
func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			v := 0.0
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
			return v
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func series(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

// TestCaptureAlertBounds: over --max-alerts a new alert is refused and counted and no object
// is written; an alert over the CRD's schema is refused by the API server and counted; the
// Role allows nothing outside podcap-system.
func TestCaptureAlertBounds(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	res := alertObjects(t, c)
	s := startAlertStore(t, c, "node-a", alerts.StoreOptions{MaxActive: 2})
	r, err := s.Record(ctx, note(testAlert("bb00000000000001", "A"), testAlert("bb00000000000002", "B"), testAlert("bb00000000000003", "C")))
	if err != nil || r != (alerts.Recorded{Recorded: 2, Refused: 1}) {
		t.Fatalf("Record: %+v, %v", r, err)
	}
	if _, err := res.Get(ctx, "bb00000000000003", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("refused alert: get = %v, want NotFound", err)
	}
	if got := series(t, s.reg, "podcap_alerts_refused_total", "reason", alerts.RefusedMaxAlerts); got != 1 {
		t.Errorf("refused{max_alerts} = %v, want 1", got)
	}
	waitFor(t, 30*time.Second, "2 active alerts", func() (bool, error) { return len(s.fingerprints()) == 2, nil })
	// later, from the cache alone: still refused, renewals still recorded
	r, err = s.Record(ctx, note(testAlert("bb00000000000001", "A"), testAlert("bb00000000000004", "D")))
	if err != nil || r != (alerts.Recorded{Recorded: 1, Refused: 1}) || count(t, res) != 2 {
		t.Fatalf("Record at the bound: %+v, %v, %d objects", r, err, count(t, res))
	}

	// over the schema's bounds (an agent run with larger Limits than the CRD): the API server
	// refuses it; that is a refusal, not an error the webhook would turn into a retry
	s.drain()
	if _, err := s.Record(ctx, note(resolvedAt(testAlert("bb00000000000002", "B"), time.Now()))); err != nil {
		t.Fatal(err)
	}
	s.waitChange(t, "resolve")
	big := testAlert("bb00000000000005", "Big")
	big.Annotations["description"] = strings.Repeat("x", 8193)
	r, err = s.Record(ctx, note(big))
	if err != nil || r != (alerts.Recorded{Refused: 1}) {
		t.Fatalf("Record over the schema: %+v, %v", r, err)
	}
	if got := series(t, s.reg, "podcap_alerts_refused_total", "reason", alerts.RefusedInvalid); got != 1 {
		t.Errorf("refused{invalid} = %v, want 1", got)
	}
	if _, err := res.Get(ctx, big.Fingerprint, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("invalid alert: get = %v, want NotFound", err)
	}

	agent, err := c.AgentDynamic()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Resource(alerts.CaptureAlertGVR).Namespace("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent lists capturealerts in default: %v, want Forbidden", err)
	}
}

// TestCaptureAlertExpiryAndGC: an alert not renewed within the TTL stops being active (and
// OnChange says so, from the store's timer), and garbage collection deletes it after the
// retention; a store restarted over the same objects sees the active alerts again.
func TestCaptureAlertExpiryAndGC(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	res := alertObjects(t, c)
	s := startAlertStore(t, c, "node-a", alerts.StoreOptions{TTL: 4 * time.Second, Retention: time.Second, GCInterval: 300 * time.Millisecond})
	start := time.Now()
	if _, err := s.Record(ctx, note(testAlert("cc00000000000001", "Expires"))); err != nil {
		t.Fatal(err)
	}
	s.waitChange(t, "recorded")
	if fps := s.fingerprints(); len(fps) != 1 && time.Since(start) < 3*time.Second {
		t.Fatalf("active %v before the TTL, want the alert", fps)
	}
	s.waitChange(t, "expired by the TTL")
	if fps := s.fingerprints(); len(fps) != 0 {
		t.Fatalf("active after the TTL: %v", fps)
	}
	if time.Since(start) < 4*time.Second {
		t.Errorf("expired after %s, before the TTL", time.Since(start))
	}
	waitFor(t, 30*time.Second, "garbage collection", func() (bool, error) { return count(t, res) == 0, nil })
	if got := value(t, s.reg, "podcap_alert_objects_deleted_total"); got != 1 {
		t.Errorf("objects_deleted_total = %v, want 1", got)
	}
	s.stop()

	// restarts: a new store (a restarted agent) over the objects another one wrote
	first := startAlertStore(t, c, "node-a", alerts.StoreOptions{})
	if _, err := first.Record(ctx, note(testAlert("cc00000000000002", "Survives"), testAlert("cc00000000000003", "Survives"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "both active", func() (bool, error) { return len(first.fingerprints()) == 2, nil })
	want, version := first.Active(time.Now())
	first.stop()
	restarted := startAlertStore(t, c, "node-a", alerts.StoreOptions{})
	got, v := restarted.Active(time.Now())
	if v != version || !slices.EqualFunc(got, want, func(a, b policy.Alert) bool { return a.Fingerprint == b.Fingerprint }) {
		t.Errorf("after the restart: %d alerts (version %s), want %d (version %s)", len(got), v, len(want), version)
	}
}
