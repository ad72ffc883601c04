package main

import (
	"bytes"
	"encoding/json"
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
