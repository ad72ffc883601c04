package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcap/podcap/test/testbed"
)

// monitoringJob is the job the shipped rules expect the agents under (deploy/monitoring).
const monitoringJob = "podcap-agent"

// TestMonitoringWithRealPrometheus: a real Prometheus scrapes a real agent, as the shipped
// PodMonitor does (job podcap-agent, a node label, honor_labels), with the shipped rules
// (deploy/monitoring/podcap-rules.yaml, their for: durations cut to 0s), while the agent runs
// a manual, a policy and an alert capture. Every query of the shipped Grafana dashboard
// returns data; the packet and byte counters of the manual capture equal what its ring files
// hold; no shipped alert fires while all is well. Then each alert is made to fire by the fault
// it is for: refused webhook requests, refused alerts, an invalid policy decision, a broken
// policy, killed and stopped capture processes (failures, kernel drops), an alert store the
// API server refuses (store errors, webhook 5xx), a byte budget nearly full with a capture
// queued behind it, a stopped agent, and a Prometheus without agents.
func TestMonitoringWithRealPrometheus(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	ns := "monitoring"
	quiet := []string{"sleep", "3600"} // no traffic of its own: counters and files can settle
	web := runningPod(t, c, ns, "web", testbed.PodOptions{Command: quiet, Annotations: map[string]string{"tcpdump.antrea.io": "2"}})
	db := runningPod(t, c, ns, "db", testbed.PodOptions{Labels: map[string]string{"podcap.io/capture": "true"}})
	cart := runningPod(t, c, ns, "cart", testbed.PodOptions{})

	w := newWebhookAgent(t, c)
	token, certFile, apiAddr, policies := w.token, w.certFile, w.apiAddr, w.policies
	args := append(w.args, "--max-alerts=1")
	a := startAgent(t, c, args...)
	args = append(args, "--listen-address="+a.ListenAddress) // the scrape target across restarts

	rules := shippedRules(t, c)
	prom := c.StartPrometheus(t, testbed.PrometheusOptions{
		Targets: []testbed.ScrapeTarget{{Address: a.ListenAddress, Job: monitoringJob, Labels: map[string]string{"node": c.NodeName}}},
		Rules:   rules,
	})

	// the three kinds of capture
	if code := postAlertFor(t, apiAddr, certFile, "Bearer "+token, "0123456789abcdef", ns, cart.Name, "firing"); code != 200 {
		t.Fatalf("webhook: %d, want 200", code)
	}
	alertSession(t, a, cart, 0)
	policySession(t, a, db)
	for range 5 {
		ping(t, c, web, 100)
	}
	waitPackets(t, a, web, "capture-web.pcap0")

	// every dashboard query has data while the captures run
	queries := dashboardQueries(t, c, map[string]string{"$node": c.NodeName, "$namespace": ns, "$__rate_interval": "1m"})
	waitFor(t, 2*time.Minute, fmt.Sprintf("data for each of the dashboard's %d queries", len(queries)), func() (bool, error) {
		var empty []string
		for _, q := range queries {
			s, err := prom.Query(ctx, q)
			if err != nil {
				return false, fmt.Errorf("dashboard query %s: %w", q, err)
			}
			if len(s) == 0 {
				empty = append(empty, q)
			}
		}
		if len(empty) > 0 {
			t.Logf("%d dashboard queries without data yet, the first: %s", len(empty), empty[0])
		}
		return len(empty) == 0, nil
	})

	// the manual capture's counters equal what its files hold (the pod sends nothing more)
	var filePackets, fileBytes int
	waitFor(t, time.Minute, "Prometheus's packet and byte counters of web to equal its ring files", func() (bool, error) {
		filePackets, fileBytes = 0, 0
		for _, f := range ringFiles(podDir(a, web)) {
			s := readPcap(t, filepath.Join(podDir(a, web), f))
			filePackets += s.packets
			fileBytes += s.bytes
		}
		packets, err := promValue(ctx, prom, fmt.Sprintf(`podcap_capture_packets_total{namespace=%q, pod="web"}`, ns))
		if err != nil {
			return false, err
		}
		bytes, err := promValue(ctx, prom, fmt.Sprintf(`podcap_capture_bytes_total{namespace=%q, pod="web"}`, ns))
		return err == nil && int(packets) == filePackets && int(bytes) == fileBytes, err
	})
	if filePackets < 10 {
		t.Errorf("web's ring holds %d packets, want at least the 5 echo requests and their replies", filePackets)
	}
	if firing := podcapAlerts(t, prom, "firing"); len(firing) > 0 {
		t.Errorf("shipped alerts firing while all is well: %v", firing)
	}

	// faults, one or more per alert
	for _, auth := range []string{"", "Bearer not-the-token-0123456789"} {
		if code := postAlertFor(t, apiAddr, certFile, auth, "fedcba9876543210", ns, cart.Name, "firing"); code != 401 {
			t.Errorf("webhook with Authorization %q: %d, want 401", auth, code)
		}
	}
	postAlertFor(t, apiAddr, certFile, "Bearer "+token, "1111111111111111", ns, web.Name, "firing") // over --max-alerts=1: refused
	writeFile(t, filepath.Join(policies, "hostile.rego"), hostilePolicy)
	runningPod(t, c, ns, "hostile", testbed.PodOptions{Command: quiet, Annotations: map[string]string{"test/filter": "; rm -rf /"}})
	waitFor(t, time.Minute, "an invalid policy decision", func() (bool, error) {
		return metric(t, a, `podcap_policy_errors_total{reason="invalid_decision"}`) > 0, nil
	})
	writeFile(t, filepath.Join(policies, "broken.rego"), "package podcap\n\nthis is not rego\n")
	provokeKernelDrops(t, c, a, db)
	for _, pid := range sessionProcs(t, a, "tcpdump") {
		_ = syscall.Kill(pid, syscall.SIGKILL) // ended on its own: a failure, restarted
	}
	provokeStoreErrors(t, c, apiAddr, certFile, token, ns, cart.Name)
	var provoked []string
	firing := func(p *testbed.PrometheusProcess, names ...string) {
		t.Helper()
		waitAlertsFiring(t, p, names...)
		provoked = append(provoked, names...)
	}
	firing(prom, "PodcapWebhookRefusingRequests", "PodcapAlertsRefused", "PodcapPolicyErrors", "PodcapPolicyReloadFailing",
		"PodcapKernelDropsHigh", "PodcapCapturesFailing", "PodcapAlertStoreErrors", "PodcapWebhookServerErrors")

	// a byte budget nearly full: one manual ring reserves 97% of it and a second waits. Only
	// those two: no policy or alert capture may take the budget first.
	if err := a.Stop(); err != nil {
		t.Fatalf("stop agent: %v", err)
	}
	_ = os.Remove(filepath.Join(policies, "broken.rego"))
	setLabel(t, c, db, "podcap.io/capture", nil)
	objects := alertObjects(t, c)
	for _, o := range listAlerts(t, objects) {
		if err := objects.Delete(ctx, o.GetName(), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	runningPod(t, c, ns, "web2", testbed.PodOptions{Command: quiet, Annotations: map[string]string{"tcpdump.antrea.io": "2"}})
	worst := 2 * (1_000_000 + 262144)
	a = startAgent(t, c, append(args, fmt.Sprintf("--retention-max-bytes=%d", worst*100/97))...)
	firing(prom, "PodcapDiskBudgetNearlyFull", "PodcapCapturesQueuedTooLong")

	// the agent stops
	if err := a.Stop(); err != nil {
		t.Fatalf("stop agent: %v", err)
	}
	firing(prom, "PodcapAgentDown")

	// a Prometheus that scrapes no agent at all
	none := c.StartPrometheus(t, testbed.PrometheusOptions{Rules: rules})
	firing(none, "PodcapAgentAbsent")

	// every shipped alert was provoked above
	for _, name := range alertNames(t, rules) {
		if !slices.Contains(provoked, name) {
			t.Errorf("shipped alert %s is not provoked by this test", name)
		}
	}
}

// shippedRules is deploy/monitoring/podcap-rules.yaml with every for: cut to 0s: a test
// cannot wait their minutes, and promtool's tests (deploy/monitoring/tests) check the for:s.
func shippedRules(t *testing.T, c *testbed.Cluster) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.RepoRoot, "deploy", "monitoring", "podcap-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return regexp.MustCompile(`(?m)^(\s+for:) \S+$`).ReplaceAllString(string(b), "$1 0s")
}

var alertName = regexp.MustCompile(`(?m)^\s+- alert: (\S+)$`)

func alertNames(t *testing.T, rules string) []string {
	t.Helper()
	var names []string
	for _, m := range alertName.FindAllStringSubmatch(rules, -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatal("no alert in the shipped rules")
	}
	return names
}

// dashboardQueries are the PromQL expressions of the shipped dashboard, its variables
// replaced by vars.
func dashboardQueries(t *testing.T, c *testbed.Cluster, vars map[string]string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.RepoRoot, "deploy", "monitoring", "dashboard", "podcap.json"))
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var exprs []string
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	var d struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	walk(d.Panels)
	names := slices.Collect(maps.Keys(vars))
	// longest first: a variable whose name starts with another's is replaced whole
	slices.SortFunc(names, func(a, b string) int { return len(b) - len(a) })
	var pairs []string
	for _, n := range names {
		pairs = append(pairs, n, vars[n])
	}
	r := strings.NewReplacer(pairs...)
	for i, e := range exprs {
		exprs[i] = r.Replace(e)
		if strings.Contains(exprs[i], "$") {
			t.Fatalf("dashboard query %q: a variable this test does not set", e)
		}
	}
	if len(exprs) < 10 {
		t.Fatalf("%d queries in the dashboard", len(exprs))
	}
	return exprs
}

// promValue is the one sample's value of expr; NaN when there is none.
func promValue(ctx context.Context, p *testbed.PrometheusProcess, expr string) (float64, error) {
	s, err := p.Query(ctx, expr)
	if err != nil || len(s) != 1 {
		return math.NaN(), err
	}
	return s[0].Value, nil
}

// podcapAlerts lists the shipped alerts (Podcap*) in the state.
func podcapAlerts(t *testing.T, p *testbed.PrometheusProcess, state string) []string {
	t.Helper()
	alerts, err := p.Alerts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range alerts {
		if name := a.Labels["alertname"]; strings.HasPrefix(name, "Podcap") && a.State == state {
			out = append(out, name)
		}
	}
	return out
}

// waitAlertsFiring waits until Prometheus fires each of the alerts.
func waitAlertsFiring(t *testing.T, p *testbed.PrometheusProcess, names ...string) {
	t.Helper()
	waitFor(t, 2*time.Minute, "alerts "+strings.Join(names, ", ")+" firing", func() (bool, error) {
		firing := podcapAlerts(t, p, "firing")
		for _, n := range names {
			if !slices.Contains(firing, n) {
				return false, nil
			}
		}
		return true, nil
	})
}

// provokeKernelDrops stops the pod's tcpdump (SIGSTOP) while the pod sends fragmented
// 60 kB echo requests: tcpdump's kernel ring (a few slots at full snaplen) fills and the
// kernel drops what does not fit; SIGCONT lets tcpdump report the drops.
func provokeKernelDrops(t *testing.T, c *testbed.Cluster, a *testbed.AgentProcess, pod *corev1.Pod) {
	t.Helper()
	procs := sessionProcs(t, a, "tcpdump")
	for _, pid := range procs {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		ping(t, c, pod, 60000)
	}
	for _, pid := range procs {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, "kernel drops of "+pod.Name+" counted", func() (bool, error) {
		return metric(t, a, fmt.Sprintf(`podcap_capture_kernel_drops_total{namespace=%q,pod=%q}`, pod.Namespace, pod.Name)) > 0, nil
	})
}

// provokeStoreErrors takes the agent's right to write CaptureAlerts away, posts an update of
// an alert (the store's write fails: a store error, and the webhook answers 5xx), and gives
// the right back.
func provokeStoreErrors(t *testing.T, c *testbed.Cluster, apiAddr, certFile, token, ns, pod string) {
	t.Helper()
	binding := c.AgentUser + "-alerts"
	if _, err := c.Kubectl(t.Context(), "delete", "rolebinding", "-n", "podcap-system", binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // t.Context() is done by now
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := c.ApplyAgentRBAC(ctx); err != nil {
			t.Errorf("restore the agent's RBAC: %v", err)
		}
	})
	// the alert resolved: a change the store must write (a repeat of what it holds would not be)
	waitFor(t, time.Minute, "the webhook to answer 5xx without the right to write CaptureAlerts", func() (bool, error) {
		return postAlertFor(t, apiAddr, certFile, "Bearer "+token, "0123456789abcdef", ns, pod, "resolved") >= 500, nil
	})
	if err := c.ApplyAgentRBAC(t.Context()); err != nil {
		t.Fatal(err)
	}
}
