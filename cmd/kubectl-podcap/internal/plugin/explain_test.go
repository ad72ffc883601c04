package plugin

import (
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func explanation() map[string]any {
	return map[string]any{
		"namespace": "shop", "pod": "web", "policy_version": "sha256:abc",
		"input":          map[string]any{"node": "n2", "manual": map[string]any{"requested": true, "files": 3}},
		"decision":       map[string]any{"capture": true, "reason": "rule dns", "files": 5, "file_size_bytes": 1 << 20, "snaplen": 96, "filter": "port 53", "max_duration": "10m0s", "engine": "native"},
		"manual_allowed": false,
		"capture":        map[string]any{"source": "policy", "phase": "running", "files": 5, "packets": 10, "bytes": 2048, "kernel_drops": 0, "started": "2026-12-06T11:58:00Z", "engine": "native"},
	}
}

func TestExplainSummary(t *testing.T) {
	te := getEnv(t)
	te.agents["n2"].decisions["shop/web"] = explanation()
	if err := te.run(t, "explain", "web"); err != nil {
		t.Fatal(err)
	}
	want := `Pod:       shop/web (node n2)
Policy:    sha256:abc
Decision:  capture (rule dns)
Files:     5 × 1.0MiB
Filter:    port 53
Snaplen:   96 bytes
Engine:    native
Duration:  at most 10m0s
Manual:    requested, 3 files: not allowed by the policy
Capture:   running (source policy, 5 files, 10 packets, 2.0KiB, 0 kernel drops, engine native, started 2m ago)
`
	if te.out.String() != want {
		t.Errorf("explain:\n%s\nwant:\n%s", te.out, want)
	}
}

func TestExplainNoCapture(t *testing.T) {
	te := getEnv(t)
	te.agents["n2"].decisions["shop/web"] = map[string]any{"namespace": "shop", "pod": "web",
		"decision": map[string]any{"capture": false, "reason": "kube-system is never captured"}}
	if err := te.run(t, "explain", "web"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Decision:  no capture (kube-system is never captured)\n", "Capture:   none running\n"} {
		if !strings.Contains(te.out.String(), s) {
			t.Errorf("explain lacks %q:\n%s", s, te.out)
		}
	}
}

func TestExplainJSONAndYAML(t *testing.T) {
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			te := getEnv(t)
			te.agents["n2"].decisions["shop/web"] = explanation()
			if err := te.run(t, "explain", "web", "-o", format); err != nil {
				t.Fatal(err)
			}
			b := te.out.Bytes()
			if format == "yaml" {
				var err error
				if b, err = yaml.YAMLToJSON(b); err != nil {
					t.Fatal(err)
				}
			}
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("%v\n%s", err, te.out)
			}
			// the agent's whole answer, the policy input included
			if got["input"].(map[string]any)["node"] != "n2" || got["decision"].(map[string]any)["filter"] != "port 53" {
				t.Errorf("%s output: %v", format, got)
			}
		})
	}
}

func TestAgentErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		setup func(*testEnv)
		token string
		want  string
	}{
		"401": {nil, "wrong", "the podcap agent on node n2 did not accept your credentials (401: unauthorized): it needs a bearer token"},
		"403": {func(te *testEnv) { te.agents["n2"].forbidden["shop"] = true }, testToken,
			"you may not read captures in namespace shop: ask for get pods/capture (403 from the podcap agent on node n2: forbidden)"},
		"404": {func(te *testEnv) { delete(te.agents["n2"].decisions, "shop/web") }, testToken,
			"explain pod shop/web: not found on the podcap agent on node n2 (404: pod is not on this node)"},
	} {
		t.Run(name, func(t *testing.T) {
			te := getEnv(t)
			te.agents["n2"].decisions["shop/web"] = explanation()
			if tc.setup != nil {
				tc.setup(te)
			}
			env := te.env(t)
			env.HTTPClient = mustFactory(t, tc.token)
			_, _, err := env.explain(t.Context(), "shop", "web")
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("err %v\nwant %s", err, tc.want)
			}
		})
	}
}
