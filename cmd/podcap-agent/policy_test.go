package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const podJSON = `{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "web", "namespace": "%s", "uid": "u1", "labels": {%s}, "annotations": {%s}},
 "spec": {"nodeName": "node-a"}, "status": {"phase": "Running", "podIP": "10.0.0.7"}}`

func writePod(t *testing.T, ns, labels, annotations string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pod.json")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(podJSON, ns, labels, annotations)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyEval(t *testing.T) {
	rules, err := filepath.Abs("../../rules")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		pod        string
		extra      []string
		code       int
		capture    bool
		filter     string
		manualOK   bool
		manualFile int
		recorder   int // files of the flight recorder; 0: none
		engine     string
	}{
		{name: "recorder label", pod: writePod(t, "shop", `"podcap.io/recorder": "true", "podcap.io/capture": "true"`, ""), code: 0, capture: true, manualOK: true, recorder: 2, engine: "tcpdump"},
		{name: "dns label", pod: writePod(t, "shop", `"podcap.io/capture-dns": "true"`, ""), code: 0, capture: true, filter: "udp port 53 or tcp port 53", manualOK: true, engine: "tcpdump"},
		{name: "dns label, --engine native", pod: writePod(t, "shop", `"podcap.io/capture-dns": "true"`, ""), extra: []string{"--engine=native"},
			code: 0, capture: true, filter: "udp port 53 or tcp port 53", manualOK: true, engine: "native"},
		{name: "bad engine", pod: writePod(t, "shop", "", ""), extra: []string{"--engine=pcap"}, code: 2},
		{name: "nothing", pod: writePod(t, "shop", "", ""), code: 0, manualOK: true},
		{name: "manual in kube-system is vetoed", pod: writePod(t, "kube-system", "", `"tcpdump.antrea.io": "3"`), code: 0, manualOK: false, manualFile: 3},
		{name: "manual on a pod labelled podcap.io/capture=never is vetoed", pod: writePod(t, "shop", `"podcap.io/capture": "never", "podcap.io/recorder": "true"`, `"tcpdump.antrea.io": "3"`),
			code: 0, manualOK: false, manualFile: 3},
		{name: "bad flag", pod: writePod(t, "shop", "", ""), extra: []string{"--bogus"}, code: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"eval", "--pod", tc.pod, "--policy-dir", rules, "--node", "node-a"}, tc.extra...)
			if code := runPolicy(args, &stdout, &stderr); code != tc.code {
				t.Fatalf("exit %d, want %d\n%s%s", code, tc.code, stdout.String(), stderr.String())
			}
			if tc.code != 0 {
				return
			}
			var out struct {
				Input struct {
					Manual struct{ Files int } `json:"manual"`
				} `json:"input"`
				Decision struct {
					Capture bool
					Filter  string
				} `json:"decision"`
				ManualAllowed bool `json:"manual_allowed"`
				Recorder      *struct {
					Capture bool
					Files   int
				} `json:"recorder"`
				Engine string `json:"engine"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
				t.Fatalf("%v\n%s", err, stdout.String())
			}
			if out.Engine != tc.engine || out.Decision.Capture != tc.capture || out.Decision.Filter != tc.filter || out.ManualAllowed != tc.manualOK ||
				out.Input.Manual.Files != tc.manualFile || out.Recorder == nil || out.Recorder.Capture != (tc.recorder > 0) || out.Recorder.Files != tc.recorder {
				t.Fatalf("output %s", stdout.String())
			}
		})
	}
}

// TestPolicyEvalDebugUntilLimit: policy eval gives the rules its --max-capture-duration as
// input.limits, and a podcap.io/debug-until window three days ahead is a capture of that limit
// that passes the agent's checks (exit 0), not a refused decision.
func TestPolicyEvalDebugUntilLimit(t *testing.T) {
	rules, err := filepath.Abs("../../rules")
	if err != nil {
		t.Fatal(err)
	}
	pod := writePod(t, "shop", "", `"podcap.io/debug-until": "2026-03-04T12:00:00Z"`)
	for _, tc := range []struct {
		extra []string
		limit int64
		want  string
	}{
		{nil, 86400, "24h0m0s"},
		{[]string{"--max-capture-duration=2h"}, 7200, "2h0m0s"},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"eval", "--pod", pod, "--policy-dir", rules, "--now", "2026-03-01T12:00:00Z"}, tc.extra...)
		if code := runPolicy(args, &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", tc.extra, code, stdout.String(), stderr.String())
		}
		var out struct {
			Input struct {
				Limits struct {
					MaxDurationSeconds int64 `json:"max_duration_seconds"`
				} `json:"limits"`
			} `json:"input"`
			Decision struct {
				Capture     bool
				MaxDuration string `json:"max_duration"`
			} `json:"decision"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			t.Fatalf("%v\n%s", err, stdout.String())
		}
		if out.Input.Limits.MaxDurationSeconds != tc.limit || !out.Decision.Capture || out.Decision.MaxDuration != tc.want {
			t.Errorf("%v: output %s\nwant limits.max_duration_seconds %d and a capture of max_duration %s", tc.extra, stdout.String(), tc.limit, tc.want)
		}
	}
}

// The review's runaway rule: without a timeout it would run for minutes and allocate
// gigabytes; the evaluation ends at --policy-eval-timeout with an error that says so.
func TestPolicyEvalTimesOut(t *testing.T) {
	dir := t.TempDir()
	rule := "package podcap\n\ndecision := {\"capture\": count(numbers.range(1, 300000000)) > 0}\n"
	if err := os.WriteFile(filepath.Join(dir, "slow.rego"), []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	args := []string{"eval", "--pod", writePod(t, "shop", "", ""), "--policy-dir", dir, "--policy-eval-timeout", "100ms"}
	if code := runPolicy(args, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, stdout.String(), stderr.String())
	}
	var out struct{ Error *string }
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || out.Error == nil || !strings.Contains(*out.Error, "timed out after 100ms") {
		t.Fatalf("output %s: %v", stdout.String(), err)
	}
}

// An Alertmanager payload's alert naming the pod's Deployment makes an alert capture; the
// output says so, with the trigger the pcapng header and capture.json get.
func TestPolicyEvalAlerts(t *testing.T) {
	rules, err := filepath.Abs("../../rules")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pod := filepath.Join(dir, "pod.json")
	podJSON := `{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "cart-7d9f-x1", "namespace": "shop", "uid": "u1", "labels": {"pod-template-hash": "7d9f"},
  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "cart-7d9f", "uid": "r1", "controller": true}]},
 "spec": {"nodeName": "node-a"}, "status": {"phase": "Running", "podIP": "10.0.0.7"}}`
	alerts := filepath.Join(dir, "alerts.json")
	payload := `{"version": "4", "status": "firing", "receiver": "podcap", "alerts": [
 {"status": "firing", "fingerprint": "5f2a", "labels": {"alertname": "HighTCPRetransmits", "namespace": "shop", "deployment": "cart"},
  "annotations": {"podcap_filter": "tcp"}, "startsAt": "2026-03-01T11:58:00Z", "endsAt": "0001-01-01T00:00:00Z",
  "generatorURL": "http://prometheus:9090/graph?g0.expr=x"}]}`
	for p, b := range map[string]string{pod: podJSON, alerts: payload} {
		if err := os.WriteFile(p, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("the filter is checked with tcpdump -d: tcpdump not on PATH")
	}
	var stdout, stderr bytes.Buffer
	if code := runPolicy([]string{"eval", "--pod", pod, "--alerts", alerts, "--policy-dir", rules}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	var out struct {
		Decision struct {
			AlertFingerprints []string `json:"alert_fingerprints"`
			StopGrace         string   `json:"stop_grace"`
			Cooldown          string   `json:"cooldown"`
			Format            string   `json:"format"`
			Filter            string   `json:"filter"`
		} `json:"decision"`
		Source  string   `json:"source"`
		Trigger []string `json:"trigger"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	d := out.Decision
	if out.Source != "alert" || strings.Join(d.AlertFingerprints, ",") != "5f2a" || d.StopGrace != "2m0s" || d.Cooldown != "5m0s" ||
		d.Format != "pcapng" || d.Filter != "tcp" || strings.Join(out.Trigger, "\n") !=
		"reason: alert HighTCPRetransmits firing\nalert: HighTCPRetransmits fingerprint=5f2a generatorURL=http://prometheus:9090/graph?g0.expr=x" {
		t.Fatalf("output %s", stdout.String())
	}
}

// A decision on the native engine whose filter that engine cannot run exactly is refused by
// `policy eval` as by the agent; the same filter on tcpdump is fine, and the output names
// the engine.
func TestPolicyEvalNativeFilter(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("the filter is checked with tcpdump -d: tcpdump not on PATH")
	}
	for _, tc := range []struct {
		engine string // of the decision; "" none
		flag   string // --engine
		code   int
	}{
		{"native", "tcpdump", 1},
		{"", "native", 1},
		{"tcpdump", "native", 0},
		{"", "tcpdump", 0},
	} {
		dir := t.TempDir()
		engine := ""
		if tc.engine != "" {
			engine = `, "engine": "` + tc.engine + `"`
		}
		rule := "package podcap\n\ndecision := {\"capture\": true, \"filter\": \"udp and len > 100\"" + engine + "}\n"
		if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(rule), 0o600); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		args := []string{"eval", "--pod", writePod(t, "shop", "", ""), "--policy-dir", dir, "--engine", tc.flag}
		if code := runPolicy(args, &stdout, &stderr); code != tc.code {
			t.Fatalf("decision engine %q, --engine %s: exit %d, want %d\n%s%s", tc.engine, tc.flag, code, tc.code, stdout.String(), stderr.String())
		}
		var out struct {
			Engine string
			Error  *string
		}
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			t.Fatalf("%v\n%s", err, stdout.String())
		}
		if tc.code == 1 && (out.Error == nil || !strings.Contains(*out.Error, "cannot be run exactly by the native engine")) ||
			tc.code == 0 && (out.Error != nil || out.Engine != "tcpdump") {
			t.Fatalf("decision engine %q, --engine %s: output %s", tc.engine, tc.flag, stdout.String())
		}
	}
}

// TestPolicyEvalUsageErrors: every mistake in the inputs or flags of `policy eval` is one line
// on stderr that names the flag or file and what is accepted, with exit status 2 and nothing
// on stdout.
func TestPolicyEvalUsageErrors(t *testing.T) {
	rules, err := filepath.Abs("../../rules")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pod := writePod(t, "shop", "", "")
	empty := filepath.Join(dir, "empty")
	onlyTests := filepath.Join(dir, "only-tests")
	for _, d := range []string{empty, onlyTests} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(onlyTests, "core_test.rego"), []byte("package podcap\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string // each in the one line of stderr
	}{
		{"no policy dir", []string{"--pod", pod}, []string{"--policy-dir is required", "*.rego"}},
		{"missing policy dir", []string{"--pod", pod, "--policy-dir", filepath.Join(dir, "nope")}, []string{"--policy-dir " + filepath.Join(dir, "nope"), "no such directory"}},
		{"policy dir is a file", []string{"--pod", pod, "--policy-dir", pod}, []string{"--policy-dir " + pod, "not a directory"}},
		{"empty policy dir", []string{"--pod", pod, "--policy-dir", empty}, []string{"--policy-dir " + empty, "no policy files", "not *_test.rego"}},
		{"only tests in the policy dir", []string{"--pod", pod, "--policy-dir", onlyTests}, []string{"no policy files"}},
		{"no pod", []string{"--policy-dir", rules}, []string{"--pod is required", "kubectl get pod NAME -o json"}},
		{"missing pod file", []string{"--pod", filepath.Join(dir, "nope.json"), "--policy-dir", rules}, []string{"--pod " + filepath.Join(dir, "nope.json"), "no such file"}},
		{"pod file is a string", []string{"--pod", write("string.json", `"web"`), "--policy-dir", rules}, []string{"--pod ", "string.json", "want one Pod as 'kubectl get pod NAME -o json'"}},
		{"pod file is a Deployment", []string{"--pod", write("deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"), "--policy-dir", rules}, []string{"kind Deployment", "want one Pod"}},
		{"pod file is a list", []string{"--pod", write("list.json", `{"kind": "List", "items": []}`), "--policy-dir", rules}, []string{"kind List", "want one Pod"}},
		{"pod without a name", []string{"--pod", write("noname.json", `{}`), "--policy-dir", rules}, []string{"no metadata.name", "want one Pod"}},
		{"pod file is not YAML", []string{"--pod", write("garbage.json", "{not: [json"), "--policy-dir", rules}, []string{"not JSON or YAML", "want one Pod"}},
		{"alerts file without alerts", []string{"--pod", pod, "--policy-dir", rules, "--alerts", write("noalerts.json", `{"status": "firing"}`)}, []string{"--alerts ", `no "alerts" list`, "Alertmanager webhook payload"}},
		{"alerts file with a string", []string{"--pod", pod, "--policy-dir", rules, "--alerts", write("stralerts.json", `"x"`)}, []string{"--alerts ", "Alertmanager webhook payload"}},
		{"alerts list of strings", []string{"--pod", pod, "--policy-dir", rules, "--alerts", write("strlist.json", `["x"]`)}, []string{"--alerts ", "list of alerts"}},
		{"--max-files 0", []string{"--pod", pod, "--policy-dir", rules, "--max-files", "0"}, []string{"--max-files 0 must be from 1 to 1024"}},
		{"--max-file-size-bytes too small", []string{"--pod", pod, "--policy-dir", rules, "--max-file-size-bytes", "100"}, []string{"--max-file-size-bytes 100 must be at least 65536"}},
		{"--max-capture-duration 0", []string{"--pod", pod, "--policy-dir", rules, "--max-capture-duration", "0s"}, []string{"--max-capture-duration 0s must be positive"}},
		{"--policy-eval-timeout too long", []string{"--pod", pod, "--policy-dir", rules, "--policy-eval-timeout", "1m"}, []string{"--policy-eval-timeout 1m0s must be positive and at most 10s"}},
		{"bad annotation key", []string{"--pod", pod, "--policy-dir", rules, "--annotation-key", "not a key"}, []string{`--annotation-key "not a key"`}},
		{"bad --now", []string{"--pod", pod, "--policy-dir", rules, "--now", "yesterday"}, []string{`--now "yesterday"`, "RFC 3339"}},
		{"positional argument", []string{"--pod", pod, "--policy-dir", rules, "extra"}, []string{`unexpected argument "extra"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := runPolicy(append([]string{"eval"}, tc.args...), &stdout, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2\n%s%s", code, stdout.String(), stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "podcap-agent policy eval: ") {
				t.Fatalf("stderr %q, want one line", stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("stderr %q, want %q in it", lines[0], w)
				}
			}
			for _, bad := range []string{"<nil>", "Go value of type", "v1.Pod"} {
				if strings.Contains(lines[0], bad) {
					t.Errorf("stderr %q: %q is not for users", lines[0], bad)
				}
			}
		})
	}
}

// TestPolicyEvalFlagsAreTheAgents: the flags policy eval shares with the agent take the same
// values and refuse the same ones, with the agent's message, and have the agent's defaults.
func TestPolicyEvalFlagsAreTheAgents(t *testing.T) {
	rules, err := filepath.Abs("../../rules")
	if err != nil {
		t.Fatal(err)
	}
	pod := writePod(t, "shop", "", "")
	for _, flags := range [][]string{
		{"--max-files=0"}, {"--max-files=1025"}, {"--max-files=1024"},
		{"--max-file-size-bytes=65535"}, {"--max-file-size-bytes=65536"},
		{"--max-capture-duration=0s"}, {"--max-capture-duration=-1h"}, {"--max-capture-duration=1s"},
		{"--policy-eval-timeout=0s"}, {"--policy-eval-timeout=11s"}, {"--policy-eval-timeout=10s"},
		{"--annotation-key=UPPER/case"}, {"--annotation-key=example.com/capture"},
		{"--engine=pcap"}, {"--engine=native"}, {"--tcpdump="},
	} {
		_, agentErr := parseOptions(t, append([]string{"--node-name=n1"}, flags...)...)
		var stdout, stderr bytes.Buffer
		code := runPolicy(append([]string{"eval", "--pod", pod, "--policy-dir", rules}, flags...), &stdout, &stderr)
		switch {
		case agentErr == nil && code != 0:
			t.Errorf("%v: the agent accepts it, policy eval exits %d: %s", flags, code, stderr.String())
		case agentErr != nil && code != 2:
			t.Errorf("%v: the agent refuses it (%v), policy eval exits %d", flags, agentErr, code)
		case agentErr != nil && stderr.String() != "podcap-agent policy eval: "+agentErr.Error()+"\n":
			t.Errorf("%v: policy eval says %q, the agent %q", flags, stderr.String(), agentErr)
		}
	}

	agentOpts, err := parseOptions(t, "--node-name=n1")
	if err != nil {
		t.Fatal(err)
	}
	var d DecisionOptions
	d.AddFlags(flag.NewFlagSet("policy eval", flag.ContinueOnError))
	if d != agentOpts.DecisionOptions {
		t.Errorf("policy eval defaults %+v, the agent's %+v", d, agentOpts.DecisionOptions)
	}
}
