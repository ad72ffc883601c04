package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podcap/podcap/test/testbed"
)

// policyDir returns a directory holding the shipped rules (rules/*.rego, not the tests) plus
// extra files (name → content).
func policyDir(t *testing.T, c *testbed.Cluster, extra map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Glob(filepath.Join(c.RepoRoot, "rules", "*.rego"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if strings.HasSuffix(r, "_test.rego") {
			continue
		}
		b, err := os.ReadFile(r)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, filepath.Base(r)), string(b))
	}
	for name, content := range extra {
		writeFile(t, filepath.Join(dir, name), content)
	}
	return dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startPolicyAgent starts an agent with a policy directory and an API token.
func startPolicyAgent(t *testing.T, c *testbed.Cluster, dir string, args ...string) (*testbed.AgentProcess, string) {
	t.Helper()
	token := "t0k3n-" + strings.ReplaceAll(t.Name(), "/", "-")
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, token+"\n")
	// a 10 s evaluation bound: a starved CI machine must not turn a stall into a PolicyError
	args = append([]string{"--policy-dir=" + dir, "--policy-poll-interval=100ms", "--policy-eval-timeout=10s", "--api-token-file=" + tokenFile}, args...)
	return startAgent(t, c, args...), token
}

func setLabel(t *testing.T, c *testbed.Cluster, pod *corev1.Pod, key string, value *string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{key: value}}})
	if _, err := c.Admin().CoreV1().Pods(pod.Namespace).Patch(t.Context(), pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// policySession waits for the pod's policy capture to run and returns its directory.
func policySession(t *testing.T, a *testbed.AgentProcess, pod *corev1.Pod) string {
	t.Helper()
	var dir string
	// the directory is made as the capture starts; the ring's first file (its pcap header
	// flushed) once the capture process runs
	waitFor(t, 30*time.Second, "a running policy capture of "+pod.Name, func() (bool, error) {
		m, err := filepath.Glob(filepath.Join(podDir(a, pod), "policy-*"))
		if len(m) == 0 || err != nil {
			return false, err
		}
		dir = m[len(m)-1]
		ring, err := filepath.Glob(filepath.Join(dir, "capture-*.pcap*"))
		return len(ring) > 0 && fileSize(ring[0]) >= 24, err
	})
	return dir
}

func ptr(s string) *string { return &s }

// TestPolicyLabelCapture: the shipped labels rule starts a capture on a labelled pod; removing
// the label stops it and keeps its files and metadata.
func TestPolicyLabelCapture(t *testing.T) {
	c := testBed(t)
	a, _ := startPolicyAgent(t, c, policyDir(t, c, nil))
	pod := runningPod(t, c, "policy-label", "web", testbed.PodOptions{Labels: map[string]string{"podcap.io/capture": "true"}})
	dir := policySession(t, a, pod)
	first := filepath.Join(dir, "capture-web.pcap0")
	waitPodIP(t, first, pod.Status.PodIP)
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "ring of 5 files")

	setLabel(t, c, pod, "podcap.io/capture", nil)
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStopped", "no longer decided")
	waitFor(t, 30*time.Second, "tcpdump stopped", func() (bool, error) { return len(sessionProcs(t, a, "tcpdump")) == 0, nil })
	if fileSize(first) <= 24 {
		t.Fatal("the policy capture's files were not kept")
	}
	var meta struct{ Reason, StopReason string }
	b, err := os.ReadFile(filepath.Join(dir, "capture.json"))
	if err == nil {
		err = json.Unmarshal(b, &struct {
			Reason     *string `json:"reason"`
			StopReason *string `json:"stop_reason"`
		}{&meta.Reason, &meta.StopReason})
	}
	if err != nil || meta.Reason != "label podcap.io/capture=true" || meta.StopReason != "no longer decided" {
		t.Fatalf("capture.json: %v %s", err, b)
	}
}

const editablePolicy = `package podcap

captures contains {"priority": 100, "reason": "edited policy", "files": 2, "file_size_bytes": 1000000} if {
	input.pod.labels.app == "%s"
}
`

// TestPolicyEditAndBrokenReload: editing a policy file in place changes the outcome without a
// restart; a broken edit keeps the previous policy working and flips the reload metric.
func TestPolicyEditAndBrokenReload(t *testing.T) {
	c := testBed(t)
	dir := policyDir(t, c, map[string]string{"edit.rego": fmt.Sprintf(editablePolicy, "alpha")})
	a, _ := startPolicyAgent(t, c, dir)
	alpha := runningPod(t, c, "policy-edit", "alpha", testbed.PodOptions{Labels: map[string]string{"app": "alpha"}})
	beta := runningPod(t, c, "policy-edit", "beta", testbed.PodOptions{Labels: map[string]string{"app": "beta"}})
	policySession(t, a, alpha)
	if v := metric(t, a, "podcap_policy_last_reload_successful"); v != 1 {
		t.Fatalf("podcap_policy_last_reload_successful = %v, want 1", v)
	}

	writeFile(t, filepath.Join(dir, "edit.rego"), fmt.Sprintf(editablePolicy, "beta")) // in place
	policySession(t, a, beta)
	waitEvent(t, c, alpha, corev1.EventTypeNormal, "CaptureStopped", "no longer decided")

	before := metric(t, a, "podcap_policy_last_reload_success_timestamp_seconds")
	writeFile(t, filepath.Join(dir, "edit.rego"), "package podcap\n\ncaptures contains {\"priority\": if\n")
	waitFor(t, 30*time.Second, "the reload metric to flip", func() (bool, error) {
		return metric(t, a, "podcap_policy_last_reload_successful") == 0, nil
	})
	if after := metric(t, a, "podcap_policy_last_reload_success_timestamp_seconds"); after != before {
		t.Errorf("success timestamp moved on a failed reload: %v → %v", before, after)
	}
	// the last good policy still decides: beta keeps its capture, a new beta pod gets one
	beta2 := runningPod(t, c, "policy-edit", "beta2", testbed.PodOptions{Labels: map[string]string{"app": "beta"}})
	policySession(t, a, beta2)
	if n := len(sessionProcs(t, a, "tcpdump")); n != 2 {
		t.Errorf("%d tcpdump processes, want 2 (beta, beta2)", n)
	}
	writeFile(t, filepath.Join(dir, "edit.rego"), fmt.Sprintf(editablePolicy, "beta"))
	waitFor(t, 30*time.Second, "the reload metric to recover", func() (bool, error) {
		return metric(t, a, "podcap_policy_last_reload_successful") == 1, nil
	})
}

const hostilePolicy = `package podcap

captures contains {"priority": 100, "reason": "hostile", "files": 1, "file_size_bytes": 1000000, "filter": input.pod.annotations["test/filter"]} if {
	input.pod.annotations["test/filter"]
}
`

// TestHostileFilterStartsNothing: a decision whose filter is not a BPF expression, or could be
// read as an option, is refused with an Event; no process starts.
func TestHostileFilterStartsNothing(t *testing.T) {
	c := testBed(t)
	a, _ := startPolicyAgent(t, c, policyDir(t, c, map[string]string{"hostile.rego": hostilePolicy}))
	for i, filter := range []string{"-z /tmp/podcap-pwned", "; rm -rf /", "$(reboot)", strings.Repeat("x", 5000)} {
		pod := runningPod(t, c, "policy-hostile", fmt.Sprintf("h%d", i), testbed.PodOptions{Annotations: map[string]string{"test/filter": filter}})
		waitEvent(t, c, pod, corev1.EventTypeWarning, "InvalidPolicyDecision", "capture decision refused")
		if !gone(podDir(a, pod)) {
			t.Errorf("filter %.40q: capture files exist", filter)
		}
	}
	if n := len(sessionProcs(t, a, "tcpdump")); n != 0 {
		t.Fatalf("%d tcpdump processes for hostile filters", n)
	}
	if !gone("/tmp/podcap-pwned") {
		t.Fatal("/tmp/podcap-pwned exists")
	}
	if v := metric(t, a, `podcap_policy_errors_total{reason="invalid_decision"}`); v != 4 {
		t.Errorf("invalid decisions = %v, want 4", v)
	}
}

// TestManualVeto: the shipped namespace deny-list vetoes manual captures in kube-system.
func TestManualVeto(t *testing.T) {
	c := testBed(t)
	a, _ := startPolicyAgent(t, c, policyDir(t, c, nil))
	pod := runningPod(t, c, "kube-system", "vetoed", testbed.PodOptions{})
	annotate(t, c, pod, "2")
	waitEvent(t, c, pod, corev1.EventTypeWarning, "ManualCaptureVetoed", "manual_allowed")
	if !gone(podDir(a, pod)) || len(sessionProcs(t, a, "tcpdump")) != 0 {
		t.Fatal("a vetoed manual request was captured")
	}
	// elsewhere the annotation still works with the policy loaded
	ok := runningPod(t, c, "policy-veto", "allowed", testbed.PodOptions{})
	annotate(t, c, ok, "2")
	waitPackets(t, a, ok, "capture-allowed.pcap0")
}

// TestOptOutNever: a pod labelled podcap.io/capture=never is captured by no shipped rule (its
// podcap.io/capture-dns and podcap.io/recorder labels ask for two) and its manual annotation is
// vetoed; without the label, the same pod is captured.
func TestOptOutNever(t *testing.T) {
	c := testBed(t)
	a, _ := startPolicyAgent(t, c, policyDir(t, c, nil))
	pod := runningPod(t, c, "policy-optout", "optout", testbed.PodOptions{Labels: map[string]string{
		"podcap.io/capture": "never", "podcap.io/capture-dns": "true", "podcap.io/recorder": "true"}})
	annotate(t, c, pod, "2")
	waitEvent(t, c, pod, corev1.EventTypeWarning, "ManualCaptureVetoed", "manual_allowed")
	if !gone(podDir(a, pod)) || len(sessionProcs(t, a, "tcpdump")) != 0 {
		t.Fatal("a pod labelled podcap.io/capture=never was captured")
	}
	setLabel(t, c, pod, "podcap.io/capture", nil)
	waitPackets(t, a, pod, "capture-optout.pcap0") // the manual annotation, no longer vetoed
}

// TestExplainMatchesWhatTheAgentDid: the API's decision, the offline `policy eval` and the
// running capture agree.
func TestExplainMatchesWhatTheAgentDid(t *testing.T) {
	c := testBed(t)
	rules := policyDir(t, c, nil)
	a, token := startPolicyAgent(t, c, rules)
	pod := runningPod(t, c, "policy-explain", "dns", testbed.PodOptions{Labels: map[string]string{"podcap.io/capture-dns": "true"}})
	session := policySession(t, a, pod)
	// the ring file exists once the capture process runs
	waitFor(t, 30*time.Second, "the capture to run", func() (bool, error) { return fileSize(filepath.Join(session, "capture-dns.pcap0")) >= 24, nil })

	client := apiClient(t, a)
	get := func(auth string) (int, []byte) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.APIURL("/api/v1/decisions/policy-explain/dns"), nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", code)
	}
	code, body := get(token)
	if code != http.StatusOK {
		t.Fatalf("%d: %s", code, body)
	}
	// the API port speaks only TLS, and the plain port of health and metrics serves no API
	for url, want := range map[string]int{"http://" + a.APIListenAddress + "/api/v1/captures": http.StatusBadRequest, a.URL("/api/v1/captures"): http.StatusNotFound} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("plain GET %s: %d, want %d", url, resp.StatusCode, want)
		}
	}
	var live struct {
		Decision map[string]any `json:"decision"`
		Capture  struct {
			Filter, Phase, Source string
			Snaplen               int
		} `json:"capture"`
	}
	if err := json.Unmarshal(body, &live); err != nil {
		t.Fatal(err)
	}
	if live.Decision["filter"] != "udp port 53 or tcp port 53" || live.Capture.Filter != "udp port 53 or tcp port 53" || live.Capture.Source != "policy" ||
		live.Capture.Snaplen != 1500 || live.Capture.Phase != "Running" {
		t.Fatalf("explain: %s", body)
	}

	// offline, from the pod as kubectl prints it
	podJSON, err := c.Kubectl(t.Context(), "get", "pod", "-n", pod.Namespace, pod.Name, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	podFile := filepath.Join(t.TempDir(), "pod.json")
	writeFile(t, podFile, podJSON)
	out, err := runCmd(c.BuildAgent(t), "policy", "eval", "--pod", podFile, "--policy-dir", rules, "--node", c.NodeName)
	if err != nil {
		t.Fatalf("policy eval: %v\n%s", err, out)
	}
	var offline struct {
		Decision map[string]any `json:"decision"`
	}
	if err := json.Unmarshal([]byte(out), &offline); err != nil {
		t.Fatalf("policy eval output: %v\n%s", err, out)
	}
	for _, k := range []string{"capture", "reason", "files", "file_size_bytes", "snaplen", "filter"} {
		if fmt.Sprint(offline.Decision[k]) != fmt.Sprint(live.Decision[k]) {
			t.Errorf("%s: offline %v, agent %v", k, offline.Decision[k], live.Decision[k])
		}
	}
}

// fixedWindowPolicy captures pods labelled podcap-test/window=fixed for 2 s.
const fixedWindowPolicy = `package podcap

captures contains {"priority": 40, "reason": "fixed window", "files": 1, "max_duration": "2s"} if {
	input.pod.labels["podcap-test/window"] == "fixed"
}
`

// TestPolicyMaxDurationAndRetention: the shipped debug-until rule captures until the time in
// the annotation (max_duration) and keeps the files; a capture that reached its max_duration is
// not restarted by the same decision; with a tiny node byte budget, retention evicts a finished
// policy capture as soon as it ends, and one older than the maximum age at the next sweep.
func TestPolicyMaxDurationAndRetention(t *testing.T) {
	c := testBed(t)
	rules := policyDir(t, c, map[string]string{"fixed.rego": fixedWindowPolicy})
	a, token := startPolicyAgent(t, c, rules)

	// debug-until: the window opens once the pod runs (RFC3339 has whole seconds: 7-8 s)
	pod := runningPod(t, c, "policy-debug", "window", testbed.PodOptions{})
	until := time.Now().Add(8 * time.Second).UTC().Format(time.RFC3339)
	if err := c.AnnotatePod(t.Context(), pod.Namespace, pod.Name, "podcap.io/debug-until", until); err != nil {
		t.Fatal(err)
	}
	dir := policySession(t, a, pod)
	waitPackets(t, a, pod, filepath.Join(filepath.Base(dir), "capture-window.pcap0"))
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStopped", "reached); files kept in "+dir)
	var meta struct {
		Reason     string `json:"reason"`
		StopReason string `json:"stop_reason"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "capture.json"))
	if err == nil {
		err = json.Unmarshal(b, &meta)
	}
	if err != nil || !strings.HasPrefix(meta.StopReason, "max_duration") || !strings.Contains(meta.Reason, until) {
		t.Fatalf("capture.json: %v %s", err, b)
	}
	// the API shows the capture expired (or, once the window's end was evaluated, gone)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.APIURL("/api/v1/decisions/policy-debug/window"), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	client := apiClient(t, a)
	waitFor(t, 30*time.Second, "the capture to show as expired or gone", func() (bool, error) {
		resp, err := client.Do(req.Clone(t.Context()))
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && (strings.Contains(string(body), `"phase": "Expired"`) || !strings.Contains(string(body), `"capture": {`)), nil
	})

	// a fixed max_duration: the decision still says "capture" after it passed, and the pod is
	// evaluated again (two label changes: the second sync starts after the first one's Ensure
	// returned), yet the expired capture is not restarted
	fixed := runningPod(t, c, "policy-debug", "fixed", testbed.PodOptions{Labels: map[string]string{"podcap-test/window": "fixed"}})
	fixedDir := policySession(t, a, fixed)
	waitEvent(t, c, fixed, corev1.EventTypeNormal, "CaptureStopped", "max_duration 2s reached")
	for i, v := range []string{"1", "2"} {
		before := metric(t, a, `podcap_policy_evaluations_total{result="capture"}`)
		setLabel(t, c, fixed, "podcap-test/touch", ptr(v))
		waitFor(t, 30*time.Second, fmt.Sprintf("re-evaluation %d", i+1), func() (bool, error) {
			return metric(t, a, `podcap_policy_evaluations_total{result="capture"}`) > before, nil
		})
	}
	if m, _ := filepath.Glob(filepath.Join(podDir(a, fixed), "policy-*")); len(m) != 1 || m[0] != fixedDir {
		t.Fatalf("policy capture directories %v: want only the expired %s", m, fixedDir)
	}
	if n := len(sessionProcs(t, a, "tcpdump")); n != 0 {
		t.Fatalf("%d tcpdump processes: an expired capture was restarted", n)
	}

	// retention: a node budget that holds one capture's worst case (rules/labels.rego's ring)
	// and 16 bytes more: the next capture's reservation evicts a finished one at once
	b2 := startAgent(t, c, "--policy-dir="+rules, fmt.Sprintf("--retention-max-bytes=%d", labelsWorstCase+16))
	labelled := runningPod(t, c, "policy-retention", "web", testbed.PodOptions{Labels: map[string]string{"podcap.io/capture": "true"}})
	session := policySession(t, b2, labelled)
	waitPackets(t, b2, labelled, filepath.Join(filepath.Base(session), "capture-web.pcap0")) // a capture with data ends
	setLabel(t, c, labelled, "podcap.io/capture", nil)
	waitEvent(t, c, labelled, corev1.EventTypeNormal, "CaptureStopped", "files kept in "+session)
	if gone(session) {
		t.Fatal("a finished capture evicted while its files fit the budget")
	}
	next := runningPod(t, c, "policy-retention", "next", testbed.PodOptions{Labels: map[string]string{"podcap.io/capture": "true"}})
	policySession(t, b2, next)
	waitFor(t, 30*time.Second, "the finished capture evicted for the next one's reservation, and counted", func() (bool, error) {
		return gone(session) && metric(t, b2, `podcap_retention_evictions_total{reason="budget"}`) >= 1, nil
	})

	// retention by age: a finished capture older than --retention-max-age goes at the next sweep
	// (the metric's reason tells it from the budget, 1 GiB here)
	b3 := startAgent(t, c, "--policy-dir="+rules, "--retention-max-age=2s", "--retention-interval=200ms")
	aged := runningPod(t, c, "policy-retention", "aged", testbed.PodOptions{Labels: map[string]string{"podcap.io/capture": "true"}})
	session = policySession(t, b3, aged)
	waitPackets(t, b3, aged, filepath.Join(filepath.Base(session), "capture-aged.pcap0"))
	setLabel(t, c, aged, "podcap.io/capture", nil)
	waitEvent(t, c, aged, corev1.EventTypeNormal, "CaptureStopped", "files kept in "+session)
	waitFor(t, 30*time.Second, "the finished capture evicted by age, and counted", func() (bool, error) {
		return gone(session) && metric(t, b3, `podcap_retention_evictions_total{reason="age"}`) >= 1, nil
	})
}

// labelsWorstCase is what a capture of rules/labels.rego (5 files of 1,000,000 bytes, default
// snaplen 262144) reserves of the node's byte budget: each file may pass its size by one
// record (a whole packet and its framing, taken for the larger of the two formats: pcapng's
// at most 35 bytes, pcap's 16), and 8 KiB for its capture.json (the agent's
// sessionMetaReserve): capture.WorstCaseBytes(5, 1_000_000, 262144) + 8192.
const labelsWorstCase = 5*(1_000_000+35+262144) + 8192

// TestRunningCapturesStayWithinTheByteBudget: five policy captures of 5 × 1 MB under a 20 MB
// budget: three reserve their worst case and run, two wait with an Event and a metric, and
// one starts when a running capture ends. What is on disk never passes the budget.
func TestRunningCapturesStayWithinTheByteBudget(t *testing.T) {
	c := testBed(t)
	const budget = 20_000_000 // 3 × labelsWorstCase = 19.0 MB fit, a fourth does not
	a := startAgent(t, c, "--policy-dir="+policyDir(t, c, nil), fmt.Sprintf("--retention-max-bytes=%d", budget), "--max-concurrent-captures=8")
	var pods []*corev1.Pod
	for i := range 5 {
		pods = append(pods, runningPod(t, c, "policy-budget", fmt.Sprintf("p%d", i), testbed.PodOptions{Labels: map[string]string{"podcap.io/capture": "true"}}))
	}
	running := func() (run, queued []*corev1.Pod) {
		for _, p := range pods {
			if m, _ := filepath.Glob(filepath.Join(podDir(a, p), "policy-*", "capture-*.pcap0")); len(m) > 0 {
				run = append(run, p)
			} else {
				queued = append(queued, p)
			}
		}
		return run, queued
	}
	waitFor(t, 60*time.Second, "three captures running and two queued for the budget", func() (bool, error) {
		run, _ := running()
		return len(run) == 3 && metric(t, a, `podcap_captures_queued{reason="budget"}`) == 2, nil
	})
	run, queued := running()
	for _, p := range queued {
		waitEvent(t, c, p, corev1.EventTypeWarning, "CaptureQueued", "--retention-max-bytes")
	}
	if used := du(t, a.CaptureDir); used > budget {
		t.Fatalf("%d bytes of capture files, budget %d", used, budget)
	}
	setLabel(t, c, run[0], "podcap.io/capture", nil)
	waitFor(t, 60*time.Second, "a queued capture to start when a running one ended", func() (bool, error) {
		now, _ := running()
		return len(now) == 4 && metric(t, a, `podcap_captures_queued{reason="budget"}`) == 1, nil
	})
	if got := metric(t, a, "podcap_capture_file_bytes"); got <= 0 || got > budget {
		t.Fatalf("podcap_capture_file_bytes %v: want what the rings hold, within the budget %d", got, budget)
	}
}

// du is the bytes of the regular files under dir.
func du(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
