package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podcap/podcap/agent"
	"github.com/podcap/podcap/test/testbed"
)

// TestPolicyEvalMatchesAgent runs one table of capture decisions through the real agent (a
// policy that gives each pod the decision its label names, the agent started with limits of
// its own) and through `podcap-agent policy eval` of the same binary, on the pod as the API
// server returns it and with the same flags, and requires the same verdict for every row:
// the agent starts the capture or refuses it with an Event, and policy eval exits 0 or 1 with
// the Event's reason in its "error".
func TestPolicyEvalMatchesAgent(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	// the node's limits, given to the agent and to policy eval alike
	flags := []string{"--max-files=8", "--max-file-size-bytes=2000000", "--max-capture-duration=1h"}
	rows := map[string]string{ // label value → decision
		"valid":          `{"capture": true, "files": 2, "file_size_bytes": 1000000, "filter": "icmp", "max_duration": "30m"}`,
		"valid-native":   `{"capture": true, "files": 2, "file_size_bytes": 1000000, "filter": "icmp", "engine": "native"}`,
		"no-capture":     `{"capture": false}`,
		"filter-typo":    `{"capture": true, "files": 2, "file_size_bytes": 1000000, "filter": "udp prot 53"}`,
		"filter-option":  `{"capture": true, "files": 2, "file_size_bytes": 1000000, "filter": "-w /etc/passwd"}`,
		"too-many-files": `{"capture": true, "files": 9, "file_size_bytes": 1000000}`,
		"file-too-large": `{"capture": true, "files": 2, "file_size_bytes": 3000000}`,
		"too-long":       `{"capture": true, "files": 2, "file_size_bytes": 1000000, "max_duration": "2h"}`,
		"tiny-snaplen":   `{"capture": true, "files": 2, "file_size_bytes": 1000000, "snaplen": 1}`,
		"unknown-engine": `{"capture": true, "files": 2, "file_size_bytes": 1000000, "engine": "turbo"}`,
		"unknown-field":  `{"capture": true, "fils": 2}`,
		"unknown-alert":  `{"capture": true, "files": 2, "file_size_bytes": 1000000, "alert_fingerprints": ["0123456789abcdef"]}`,
		"native-filter":  `{"capture": true, "files": 2, "file_size_bytes": 1000000, "engine": "native", "filter": "ip[0] & 0xf > 5 and len > 100000"}`,
	}
	var rego strings.Builder
	rego.WriteString("package podcap\n\nimport rego.v1\n\nrows := {\n")
	names := make([]string, 0, len(rows))
	for name := range rows {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(&rego, "\t%q: %s,\n", name, rows[name])
	}
	rego.WriteString("}\n\ndecision := rows[input.pod.labels[\"parity-row\"]]\n")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "parity.rego"), rego.String())

	a, token := startPolicyAgent(t, c, dir, flags...)
	client := apiClient(t, a)
	bin := c.BuildAgent(t)
	const ns = "parity"
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			pod := runningPod(t, c, ns, "row-"+name, testbed.PodOptions{Labels: map[string]string{"parity-row": name}})

			// the agent's verdict: a capture, or a Warning that refuses it; for a decision not
			// to capture (no Event), the agent's own explanation of the pod
			var agentVerdict, agentMsg string
			waitFor(t, 60*time.Second, "the agent's verdict on "+name, func() (bool, error) {
				if strings.Contains(rows[name], `"capture": false`) {
					e, err := explainPod(ctx, a, client, token, pod)
					if err != nil || e.Decision == nil {
						return false, err
					}
					if !e.Decision.Capture && e.Error == "" && e.Capture == nil {
						agentVerdict = "none"
					} else {
						agentVerdict, agentMsg = "unexpected", fmt.Sprintf("%+v", e)
					}
					return true, nil
				}
				evs, err := events(ctx, c, pod)
				if err != nil {
					return false, err
				}
				for _, e := range evs {
					switch e.Reason {
					case "CaptureStarted":
						agentVerdict = "capture"
					case "InvalidPolicyDecision", "PolicyError":
						agentVerdict, agentMsg = e.Reason, e.Message
					}
				}
				return agentVerdict != "", nil
			})

			// policy eval on the pod as the API server has it
			out, err := c.Kubectl(ctx, "-n", ns, "get", "pod", pod.Name, "-o", "json")
			if err != nil {
				t.Fatal(err)
			}
			podFile := filepath.Join(t.TempDir(), "pod.json")
			writeFile(t, podFile, out)
			cmd := exec.CommandContext(ctx, bin, append([]string{"policy", "eval", "--pod", podFile, "--policy-dir", dir}, flags...)...)
			stdout, err := cmd.Output()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			var res struct {
				Decision *struct{ Capture bool } `json:"decision"`
				Error    *string                 `json:"error"`
			}
			if err := json.Unmarshal(stdout, &res); err != nil {
				t.Fatalf("policy eval exit %d: %v\n%s", code, err, stdout)
			}
			evalMsg := ""
			if res.Error != nil {
				evalMsg = *res.Error
			}
			t.Logf("agent: %s %q; policy eval: exit %d %q", agentVerdict, agentMsg, code, evalMsg)
			switch agentVerdict {
			case "capture", "none":
				if code != 0 || res.Error != nil || res.Decision == nil || res.Decision.Capture != (agentVerdict == "capture") {
					t.Errorf("the agent: %s; policy eval exit %d, error %q", agentVerdict, code, evalMsg)
				}
			default:
				if code != 1 || evalMsg == "" || !strings.Contains(agentMsg, evalMsg) {
					t.Errorf("the agent refused it (%s: %q); policy eval exit %d, error %q (want 1 and the same reason)", agentVerdict, agentMsg, code, evalMsg)
				}
			}
		})
	}
}

// explainPod is the agent's explanation of pod (GET /api/v1/decisions/{namespace}/{pod}).
func explainPod(ctx context.Context, a *testbed.AgentProcess, client *http.Client, token string, pod *corev1.Pod) (*agent.Explanation, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.APIURL("/api/v1/decisions/"+pod.Namespace+"/"+pod.Name), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("explain %s/%s: %s", pod.Namespace, pod.Name, resp.Status)
	}
	var e agent.Explanation
	return &e, json.NewDecoder(resp.Body).Decode(&e)
}
