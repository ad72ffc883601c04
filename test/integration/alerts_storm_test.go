package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podcap/podcap/agent/alerts"
	"github.com/podcap/podcap/test/testbed"
)

// Storm bounds: the agent holds at most stormMaxAlerts active alerts and runs at most
// stormMaxCaptures captures; stormPods of the alerts name real pods.
const (
	stormAlerts      = 1000
	stormBatch       = alerts.DefaultMaxAlerts // alerts per notification, as the receiver's max_alerts
	stormMaxAlerts   = 500
	stormMaxCaptures = 3
	stormPods        = 5
	// stormRSSBound is a generous bound of the agent's resident memory during and after the
	// storm (an idle agent holds ~40-60 MiB; 500 objects of ~1 KiB in the cache and the policy
	// input are a few MiB more). A leak per alert or per request would cross it.
	stormRSSBound = 256 << 20
)

// TestAlertStorm: 1,000 distinct alerts in 10 s (five notifications of 200, one every 2 s, as
// Alertmanager would send a group flush) to an agent with --max-alerts 500 and
// --max-concurrent-captures 3. The first five alerts name running pods. Asserted, by counts,
// never by times: /healthz answers 200 throughout; exactly 500 CaptureAlert objects (the bound;
// --max-alerts counts active alerts, and objects are bounded by 2× that); the other 500
// refused and counted (podcap_alerts_refused_total{reason="max_alerts"}, and the answers'
// "refused"); at most 3 captures run at any time and 3 do (the other 2 queued on the
// concurrency bound); the agent's RSS stays under stormRSSBound. Then every alert resolves
// (the captures stop, nothing active) and a new alert is recorded and captures again: the
// agent recovered. A notification answered 503 (the webhook's 5 s bound) is sent again, as
// Alertmanager retries it.
func TestAlertStorm(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	objects := alertObjects(t, c)

	// the pods first: they start while the agent does
	const ns = "alert-storm"
	if err := c.EnsureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	pods := make([]*corev1.Pod, stormPods)
	for i := range pods {
		name := stormPodName(i)
		if _, err := c.CreatePod(ctx, ns, name, testbed.PodOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := c.DeletePod(context.Background(), ns, name); err != nil {
				t.Errorf("delete pod: %v", err)
			}
		})
	}

	scratch := t.TempDir()
	token := "storm-webhook-token-0123456789"
	tokenFile := filepath.Join(scratch, "webhook-token")
	writeFile(t, tokenFile, token+"\n")
	a := startAgent(t, c, "--policy-dir="+policyDir(t, c, nil), "--policy-poll-interval=100ms", "--policy-eval-timeout=10s",
		"--webhook-token-file="+tokenFile, "--max-alerts="+strconv.Itoa(stormMaxAlerts),
		"--max-concurrent-captures="+strconv.Itoa(stormMaxCaptures))
	for i := range pods {
		var err error
		if pods[i], err = c.WaitPodRunning(ctx, ns, stormPodName(i)); err != nil {
			t.Fatal(err)
		}
	}
	hook := &stormHook{t: t, client: apiClient(t, a), url: a.APIURL(alerts.WebhookPath), token: token}
	rssBefore := vmRSS(t, a.PID())

	// watch the bounds while the storm blows: health, tcpdump processes, RSS
	watch := newStormWatch(t, a)
	storm := make([]testbed.WebhookAlert, stormAlerts)
	for i := range storm {
		storm[i] = stormAlert(i, "", "")
		if i < stormPods {
			storm[i] = stormAlert(i, ns, pods[i].Name)
		}
	}
	start := time.Now()
	var recorded, refused int
	for b := 0; b*stormBatch < stormAlerts; b++ {
		// one notification every 2 s: 1,000 alerts in 10 s (the last one leaves at 8 s)
		if d := time.Until(start.Add(time.Duration(b) * 2 * time.Second)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
		r := hook.post(ctx, storm[b*stormBatch:(b+1)*stormBatch])
		recorded += r.Recorded
		refused += r.Refused
	}
	t.Logf("storm: %d alerts in %d notifications in %s (%d answered 503 and were sent again): %d recorded, %d refused",
		stormAlerts, stormAlerts/stormBatch, time.Since(start).Round(time.Millisecond), hook.retries, recorded, refused)

	// counts: the bound is exact on one agent
	if recorded != stormMaxAlerts || refused != stormAlerts-stormMaxAlerts {
		t.Errorf("answers: %d recorded, %d refused; want %d, %d", recorded, refused, stormMaxAlerts, stormAlerts-stormMaxAlerts)
	}
	if n := len(listAlerts(t, objects)); n != stormMaxAlerts {
		t.Errorf("%d CaptureAlert objects, want %d (--max-alerts)", n, stormMaxAlerts)
	}
	for i := range stormPods {
		getAlert(t, objects, storm[i].Fingerprint) // the pods' alerts came first: recorded
	}
	if v := metric(t, a, `podcap_alerts_refused_total{reason="max_alerts"}`); v < stormAlerts-stormMaxAlerts {
		t.Errorf(`podcap_alerts_refused_total{reason="max_alerts"} = %v, want ≥ %d`, v, stormAlerts-stormMaxAlerts)
	}
	if v := metric(t, a, `podcap_alerts_refused_total{reason="max_objects"}`); v != 0 {
		t.Errorf(`podcap_alerts_refused_total{reason="max_objects"} = %v, want 0`, v)
	}
	waitFor(t, time.Minute, "the agent's cache to hold the 500 active alerts", func() (bool, error) {
		return metric(t, a, "podcap_alerts_active") == stormMaxAlerts, nil
	})
	if v := metric(t, a, "podcap_alert_objects"); v > 2*stormMaxAlerts {
		t.Errorf("podcap_alert_objects = %v, over the objects' bound %d", v, 2*stormMaxAlerts)
	}

	// captures: the concurrency bound holds, and is used
	waitFor(t, time.Minute, fmt.Sprintf("%d alert captures running, %d queued", stormMaxCaptures, stormPods-stormMaxCaptures), func() (bool, error) {
		return metric(t, a, `podcap_captures_running{source="alert"}`) == stormMaxCaptures &&
			metric(t, a, `podcap_captures_queued{reason="concurrency"}`) == stormPods-stormMaxCaptures, nil
	})
	withPackets := 0
	for _, p := range pods {
		for _, dir := range sessions(t, a, p, "alert-*") {
			if pcapngPackets(t, filepath.Join(dir, "capture-"+p.Name+".pcapng0")) > 0 {
				withPackets++
			}
		}
	}
	if withPackets == 0 {
		t.Errorf("no alert capture of the %d pods holds a packet", stormPods)
	}

	// resolve everything that was recorded: nothing active, every capture stops
	for b := 0; b*stormBatch < stormMaxAlerts; b++ {
		batch := make([]testbed.WebhookAlert, 0, stormBatch)
		for _, al := range storm[b*stormBatch : min((b+1)*stormBatch, stormMaxAlerts)] {
			al.Status, al.EndsAt = alerts.StatusResolved, time.Now().UTC()
			batch = append(batch, al)
		}
		hook.post(ctx, batch)
	}
	waitFor(t, time.Minute, "no active alert and no capture", func() (bool, error) {
		return metric(t, a, "podcap_alerts_active") == 0 && len(sessionProcs(t, a, "tcpdump")) == 0 &&
			metric(t, a, `podcap_captures_running{source="alert"}`) == 0 && metric(t, a, `podcap_captures_queued{reason="concurrency"}`) == 0, nil
	})
	worst := watch.stop()
	t.Logf("during the storm: %d /healthz polls, %d failed; at most %d tcpdump processes; RSS %d MiB before, at most %d MiB",
		worst.polls, worst.unhealthy, worst.tcpdumps, rssBefore>>20, worst.rss>>20)
	if worst.unhealthy != 0 || worst.polls == 0 {
		t.Errorf("/healthz: %d of %d polls failed, want none (last: %s)", worst.unhealthy, worst.polls, worst.lastErr)
	}
	if worst.tcpdumps > stormMaxCaptures {
		t.Errorf("%d tcpdump processes at once, over --max-concurrent-captures %d", worst.tcpdumps, stormMaxCaptures)
	}
	if worst.rss > stormRSSBound {
		t.Errorf("agent RSS reached %d MiB, over the bound %d MiB", worst.rss>>20, stormRSSBound>>20)
	}

	// recovered: a new alert (the 500 resolved objects stay until --alert-retention, under
	// the objects' bound of 1,000) is recorded and captures its pod again (cooldown 0)
	fresh := stormAlert(stormAlerts, ns, pods[stormPods-1].Name)
	if r := hook.post(ctx, []testbed.WebhookAlert{fresh}); r.Recorded != 1 || r.Refused != 0 {
		t.Errorf("a new alert after the storm: %+v, want recorded", r)
	}
	getAlert(t, objects, fresh.Fingerprint)
	waitFor(t, time.Minute, "the new alert's capture", func() (bool, error) {
		return metric(t, a, `podcap_captures_running{source="alert"}`) == 1, nil
	})
	if err := a.Stop(); err != nil {
		t.Errorf("agent exit after the storm: %v", err)
	}
}

func stormPodName(i int) string { return fmt.Sprintf("storm-%d", i) }

// stormAlert is distinct alert number i; with ns and pod it names that pod (rules/alerts.rego),
// stops at once when resolved and has no cooldown.
func stormAlert(i int, ns, pod string) testbed.WebhookAlert {
	labels := map[string]string{"alertname": "Storm", "instance": fmt.Sprintf("host-%04d:9100", i), "severity": "warning"}
	annotations := map[string]string{"summary": fmt.Sprintf("storm alert %d", i)}
	if pod != "" {
		labels["namespace"], labels["pod"] = ns, pod
		annotations["podcap_stop_grace"], annotations["podcap_cooldown"] = "0s", "0s"
	}
	return testbed.WebhookAlert{
		Status: alerts.StatusFiring, Labels: labels, Annotations: annotations,
		StartsAt: time.Now().Add(-time.Minute).UTC().Truncate(time.Second), Fingerprint: fmt.Sprintf("5707%012x", i),
		GeneratorURL: "http://prometheus.example:9090/graph?g0.expr=storm",
	}
}

// stormHook posts notifications to an agent's webhook as Alertmanager does.
type stormHook struct {
	t       *testing.T
	client  *http.Client
	url     string
	token   string
	retries int
}

// post sends one notification and returns the answer; a 503 is sent again (Alertmanager
// retries a 5xx within its flush), anything else but 200 fails the test.
func (h *stormHook) post(ctx context.Context, as []testbed.WebhookAlert) alerts.Recorded {
	h.t.Helper()
	msg := testbed.NewWebhookMessage("podcap", `{}:{alertname="Storm"}`, map[string]string{"alertname": "Storm"}, as)
	var res alerts.Recorded
	waitFor(h.t, time.Minute, "the webhook to take a notification of "+strconv.Itoa(len(as))+" alerts", func() (bool, error) {
		code, b, err := testbed.PostWebhook(ctx, h.client, h.url, h.token, msg)
		if err != nil {
			return false, err
		}
		switch code {
		case http.StatusOK:
			return true, json.Unmarshal(b, &res)
		case http.StatusServiceUnavailable:
			h.retries++
			return false, fmt.Errorf("503: %s", b)
		}
		h.t.Fatalf("webhook answered %d %s: %s", code, http.StatusText(code), b)
		return false, nil
	})
	return res
}

// stormWatch polls the agent's /healthz, its tcpdump processes and its RSS every 100 ms until
// stop, and keeps the worst it saw.
type stormWatch struct {
	done chan struct{}
	wg   sync.WaitGroup
	max  stormMax
}

type stormMax struct {
	polls, unhealthy int
	lastErr          string
	tcpdumps         int
	rss              int64
}

func newStormWatch(t *testing.T, a *testbed.AgentProcess) *stormWatch {
	w := &stormWatch{done: make(chan struct{})}
	client := &http.Client{Timeout: 2 * time.Second}
	w.wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			resp, err := client.Get(a.URL("/healthz"))
			w.max.polls++
			if err != nil {
				w.max.unhealthy++
				w.max.lastErr = err.Error()
			} else {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					w.max.unhealthy++
					w.max.lastErr = resp.Status
				}
			}
			if pids, err := a.SessionPIDs(); err == nil {
				n := 0
				for _, pid := range pids {
					if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(b)) == "tcpdump" {
						n++
					}
				}
				w.max.tcpdumps = max(w.max.tcpdumps, n)
			}
			if rss, err := readVmRSS(a.PID()); err == nil {
				w.max.rss = max(w.max.rss, rss)
			}
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
		}
	})
	t.Cleanup(func() { w.stop() })
	return w
}

// stop ends the polling (once) and returns the worst seen.
func (w *stormWatch) stop() stormMax {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
	return w.max
}

// vmRSS is the process's resident set size in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	v, err := readVmRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readVmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
