package agent

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/policy"
)

// staticAlerts is an AlertSource of fixed alerts.
type staticAlerts []policy.Alert

var _ AlertSource = staticAlerts(nil)

func (a staticAlerts) Active(time.Time) ([]policy.Alert, string) { return a, fmt.Sprint(len(a)) }

func alert(fp, name, url string) policy.Alert {
	return policy.Alert{Fingerprint: fp, Status: "firing", Labels: map[string]string{"alertname": name, "namespace": "default"},
		Annotations: map[string]string{}, GeneratorURL: url}
}

var alertDecision = policy.Decision{Capture: true, Reason: "alerts HighLatency, Errors", Files: 3, FileSizeBytes: 1_000_000,
	AlertFingerprints: []string{"fp2", "fp1", "fp2"}, StopGrace: policy.Duration(2 * time.Minute),
	Cooldown: policy.Duration(5 * time.Minute), Format: policy.FormatPcapng}

func newAlertCtrl(t *testing.T, d policy.Decision, alerts staticAlerts, pods ...*corev1.Pod) *ctrlFixture {
	t.Helper()
	p := &fakePolicy{version: "v1", decide: capturing(d)}
	return newCtrl(t, Config{Policy: p, Filters: fakeFilters{}, Alerts: alerts}, pods...)
}

func TestAlertDecisionMakesAlertCapture(t *testing.T) {
	alerts := staticAlerts{
		alert("fp1", "HighLatency", "http://prom:9090/graph?g0.expr=latency&g0.tab=1"),
		alert("fp2", "Errors\nforged: line", ""),
		alert("fp3", "Unrelated", "http://prom"),
	}
	f := newAlertCtrl(t, alertDecision, alerts, pod("web", nil))
	f.sync(t, "default/web")
	s, ok := f.captures.spec("default/web")
	want := capture.Spec{Namespace: "default", Pod: "web", UID: "uid-web", Files: 3, FileSize: 1_000_000,
		Source: capture.SourceAlert, Reason: "alerts HighLatency, Errors", Alerts: "fp1,fp2",
		Trigger: "reason: alerts HighLatency, Errors\n" +
			"alert: HighLatency fingerprint=fp1 generatorURL=http://prom:9090/graph?g0.expr=latency&g0.tab=1\n" +
			"alert: Errors?forged: line fingerprint=fp2",
		Format: capture.FormatPcapng, StopGrace: 2 * time.Minute, Cooldown: 5 * time.Minute, Engine: capture.EngineTcpdump}
	if !ok || s != want {
		t.Fatalf("spec = %+v\nwant   %+v", s, want)
	}
	if ev := f.events(); len(ev) != 0 {
		t.Fatalf("events = %q", ev)
	}

	// the same decision without alerts is a policy capture
	d := alertDecision
	d.AlertFingerprints = []string{}
	f = newAlertCtrl(t, d, alerts, pod("web", nil))
	f.sync(t, "default/web")
	if s, _ := f.captures.spec("default/web"); s.Source != capture.SourcePolicy || s.Alerts != "" || s.Trigger != "reason: alerts HighLatency, Errors" {
		t.Fatalf("spec = %+v, want a policy capture", s)
	}
}

// A decision naming an alert that is not active is refused: its capture would be labelled
// with an alert that is not firing.
func TestDecisionNamingUnknownAlertIsRefused(t *testing.T) {
	d := alertDecision
	d.AlertFingerprints = []string{"fp1", "gone", "nope"}
	f := newAlertCtrl(t, d, staticAlerts{alert("fp1", "HighLatency", "")}, pod("web", nil))
	f.sync(t, "default/web")
	if _, ok := f.captures.spec("default/web"); ok {
		t.Fatal("a capture started")
	}
	want := `Warning InvalidPolicyDecision capture decision refused: invalid decision: alert_fingerprints: "gone", "nope" are not the fingerprint of an active alert (input.alerts)`
	if ev := f.events(); len(ev) != 1 || ev[0] != want {
		t.Fatalf("events = %q\nwant [%q]", ev, want)
	}
}

func TestAlertTriggerIsBounded(t *testing.T) {
	var alerts []policy.Alert
	var fps []string
	for i := range 100 {
		fp := fmt.Sprintf("%016x", i)
		alerts = append(alerts, alert(fp, "Storm", "http://prometheus.example:9090/graph?g0.expr="+strings.Repeat("x", 100)))
		fps = append(fps, fp)
	}
	d := alertDecision
	d.AlertFingerprints = fps
	fpList, trigger, err := alertTrigger(d, alerts)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Split(fpList, ",")); n != capture.MaxAlerts {
		t.Errorf("%d fingerprints in Spec.Alerts, want %d", n, capture.MaxAlerts)
	}
	lines := strings.Split(trigger, "\n")
	if len(trigger) > capture.MaxTriggerLen || !strings.HasPrefix(lines[len(lines)-1], "... and ") ||
		lines[len(lines)-1] != fmt.Sprintf("... and %d more alerts", 100-(len(lines)-2)) {
		t.Fatalf("trigger of %d bytes, %d lines, last %q", len(trigger), len(lines), lines[len(lines)-1])
	}
}

// A policy or alert capture waiting for its cooldown is no problem of the pod (the manager
// sends the Normal Event); the pod is evaluated again when the cooldown ends.
func TestCoolingDownRequeuesThePod(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	f := newCtrl(t, Config{Policy: p, Filters: fakeFilters{}, Clock: clk}, pod("web", nil))
	f.captures.err = fmt.Errorf("wrapped: %w", &capture.CoolingDownError{Ended: clk.Now(), Until: clk.Now()})
	f.sync(t, "default/web")
	if ev := f.events(); len(ev) != 0 {
		t.Fatalf("events = %q, want none", ev)
	}
	if f.c.queue.Len() != 0 {
		t.Fatal("requeued at once")
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.c.queue.Len() == 0 { // AddAfter's delay is real time: the cooldown's end plus a second
		if time.Now().After(deadline) {
			t.Fatal("the pod was not queued again after its cooldown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if key, _ := f.c.queue.Get(); key != "default/web" {
		t.Fatalf("queued %q", key)
	}
}

// A timed-out evaluation keeps an alert capture as it keeps a policy one.
func TestEvalTimeoutKeepsAlertCapture(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: capturing(alertDecision)}
	f := newCtrl(t, Config{Policy: p, Filters: fakeFilters{}, Alerts: staticAlerts{alert("fp1", "A", ""), alert("fp2", "B", "")}}, pod("web", nil))
	f.sync(t, "default/web")
	before, ok := f.captures.spec("default/web")
	if !ok || before.Source != capture.SourceAlert {
		t.Fatalf("spec %+v", before)
	}
	p.mu.Lock()
	p.version, p.decide = "v2", func(policy.Input) (policy.Result, error) {
		return policy.Result{ManualAllowed: true, Version: "v2"}, fmt.Errorf("evaluate policy v2: %w after 1s", policy.ErrEvalTimeout)
	}
	p.mu.Unlock()
	f.sync(t, "default/web")
	if s, ok := f.captures.spec("default/web"); !ok || s != before || len(f.captures.stopped) != 0 {
		t.Fatalf("alert capture %+v %v, stops %v after a timeout; want it unchanged", s, ok, f.captures.stopped)
	}
}

func TestCaptureStatusShowsTriggerAndGrace(t *testing.T) {
	at := time.Date(2026, 12, 6, 12, 2, 0, 0, time.UTC)
	st := captureStatus(capture.Status{Phase: capture.PhaseRunning, StopsAt: at, Spec: capture.Spec{
		Source: capture.SourceAlert, Alerts: "fp1,fp2", Trigger: "reason: r\nalert: A fingerprint=fp1",
		Format: capture.FormatPcapng, StopGrace: 2 * time.Minute, Cooldown: 5 * time.Minute}})
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"source":"alert"`, `"format":"pcapng"`, `"alerts":["fp1","fp2"]`,
		`"trigger":["reason: r","alert: A fingerprint=fp1"]`, `"stop_grace":"2m0s"`, `"cooldown":"5m0s"`,
		`"stopping_at":"2026-12-06T12:02:00Z"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("status %s lacks %s", b, want)
		}
	}
	if b, _ := json.Marshal(captureStatus(capture.Status{Spec: capture.Spec{Source: capture.SourceManual}})); strings.Contains(string(b), "stopping_at") ||
		!strings.Contains(string(b), `"format":"pcap"`) {
		t.Errorf("manual status %s", b)
	}
}
