package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
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
	}{
		{name: "dns label", pod: writePod(t, "shop", `"podcap.io/capture-dns": "true"`, ""), code: 0, capture: true, filter: "udp port 53", manualOK: true},
		{name: "nothing", pod: writePod(t, "shop", "", ""), code: 0, manualOK: true},
		{name: "manual in kube-system is vetoed", pod: writePod(t, "kube-system", "", `"tcpdump.antrea.io": "3"`), code: 0, manualOK: false, manualFile: 3},
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
			}
			if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
				t.Fatalf("%v\n%s", err, stdout.String())
			}
			if out.Decision.Capture != tc.capture || out.Decision.Filter != tc.filter || out.ManualAllowed != tc.manualOK ||
				out.Input.Manual.Files != tc.manualFile {
				t.Fatalf("output %s", stdout.String())
			}
		})
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
