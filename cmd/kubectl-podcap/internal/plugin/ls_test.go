package plugin

import (
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func capItem(ns, pod, source, state string, files ...string) map[string]any {
	fl := []any{}
	for _, f := range files {
		fl = append(fl, map[string]any{"name": f, "size_bytes": 100, "modified": "2026-12-06T11:59:00Z"})
	}
	return map[string]any{"namespace": ns, "pod": pod, "source": source, "state": state, "reason": "rule r1",
		"alerts": []string{"fp1"}, "started": "2026-12-06T11:55:00Z", "packets": 42, "bytes": 2048,
		"kernel_drops": 1, "format": "pcap", "filter": "port 53", "files": fl}
}

func lsEnv(t *testing.T) *testEnv {
	te := newTestEnv(t, []string{"n1", "n2"})
	te.agents["n1"].captures = []any{capItem("shop", "web", "manual", "running", "capture-web.pcap0"),
		capItem("bank", "vault", "policy", "running", "a", "b")}
	// an agent before the retrieval API: {namespace, pod, capture: {...}}
	te.agents["n2"].captures = []any{map[string]any{"namespace": "shop", "pod": "cart", "capture": map[string]any{
		"source": "alert", "phase": "finished", "files": 3, "packets": 7, "bytes": 700, "kernel_drops": 0,
		"started": "2026-12-06T10:00:00Z", "filter": "tcp"}}}
	return te
}

func TestLsTable(t *testing.T) {
	te := lsEnv(t)
	if err := te.run(t, "ls"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"NAMESPACE   POD    NODE   SOURCE   STATE      FILES   BYTES    PACKETS   DROPS   AGE",
		"shop        cart   n2     alert    finished   3       700B     7         0       120m",
		"shop        web    n1     manual   running    1       2.0KiB   42        1       5m",
	}
	if got := strings.Split(strings.TrimSpace(te.out.String()), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("ls:\n%s\nwant:\n%s", te.out, strings.Join(want, "\n"))
	}
	for _, a := range te.agents {
		if len(a.requests) != 1 || a.requests[0] != "/api/v1/captures?namespace=shop" {
			t.Errorf("agent %s got %v, want one list of namespace shop", a.node, a.requests)
		}
	}
}

func TestLsAllNamespacesWide(t *testing.T) {
	te := lsEnv(t)
	if err := te.run(t, "ls", "-A", "-o", "wide"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(te.out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "bank ") || !strings.HasSuffix(lines[0], "REASON    ALERTS   FILTER") {
		t.Fatalf("ls -A -o wide:\n%s", te.out)
	}
	if f := strings.Fields(lines[1]); strings.Join(f[len(f)-5:], " ") != "rule r1 fp1 port 53" {
		t.Errorf("wide columns of bank/vault: %q", lines[1])
	}
	if got := te.agents["n1"].requests; len(got) != 1 || got[0] != "/api/v1/captures" {
		t.Errorf("requests %v, want the list of every namespace", got)
	}
}

func TestLsJSONAndYAML(t *testing.T) {
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			te := lsEnv(t)
			if err := te.run(t, "ls", "-A", "-o", format); err != nil {
				t.Fatal(err)
			}
			b := te.out.Bytes()
			if format == "yaml" {
				var err error
				if b, err = yaml.YAMLToJSON(b); err != nil {
					t.Fatalf("yaml: %v\n%s", err, te.out)
				}
			}
			var caps []Capture
			if err := json.Unmarshal(b, &caps); err != nil {
				t.Fatalf("%v\n%s", err, te.out)
			}
			if len(caps) != 3 || caps[0].Pod != "vault" || caps[0].Node != "n1" || len(caps[0].Files) != 2 ||
				caps[0].Files[1].Name != "b" || caps[1].Pod != "cart" || caps[1].State != "finished" || caps[1].Packets != 7 {
				t.Errorf("%s: %+v", format, caps)
			}
		})
	}
}

func TestLsErrors(t *testing.T) {
	t.Run("bad output", func(t *testing.T) {
		te := lsEnv(t)
		if err := te.run(t, "ls", "-o", "xml"); err == nil || !strings.Contains(err.Error(), `unknown output format "xml"`) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("arguments", func(t *testing.T) {
		te := lsEnv(t)
		if err := te.run(t, "ls", "web"); err == nil {
			t.Error("ls with an argument: no error")
		}
	})
	t.Run("one agent forbids", func(t *testing.T) {
		te := lsEnv(t)
		te.agents["n2"].forbidden["shop"] = true
		err := te.run(t, "ls")
		want := "you may not read captures in namespace shop: ask for get pods/capture (403 from the podcap agent on node n2: forbidden)"
		if err == nil || err.Error() != want {
			t.Errorf("err %v\nwant %s", err, want)
		}
		if !strings.Contains(te.out.String(), "web ") || strings.Contains(te.out.String(), "cart") {
			t.Errorf("the answering agent's captures should print:\n%s", te.out)
		}
	})
	t.Run("no agents", func(t *testing.T) {
		te := newTestEnv(t, nil)
		if err := te.run(t, "ls"); err == nil || !strings.Contains(err.Error(), "no running podcap agents") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("other agent namespace", func(t *testing.T) {
		te := lsEnv(t)
		if err := te.run(t, "ls", "--agent-namespace", "elsewhere"); err == nil || !strings.Contains(err.Error(), "namespace elsewhere") {
			t.Errorf("err %v", err)
		}
	})
}

func TestLsNone(t *testing.T) {
	te := lsEnv(t)
	if err := te.run(t, "ls", "-n", "empty"); err != nil {
		t.Fatal(err)
	}
	if te.out.Len() != 0 || te.errOut.String() != "No captures found in namespace empty.\n" {
		t.Errorf("stdout %q, stderr %q", te.out, te.errOut)
	}
	if err := te.run(t, "ls", "-n", "empty", "-o", "json"); err != nil || te.out.String() != "[]\n" {
		t.Errorf("-o json: %q, %v", te.out, err)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0B", 1023: "1023B", 1024: "1.0KiB", 1536: "1.5KiB", 5 << 20: "5.0MiB", 3 << 30: "3.0GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %s, want %s", n, got, want)
		}
	}
}

// PODCAP_AGENT_NAMESPACE names the agents' namespace for every command (a Helm release in
// another namespace); --agent-namespace still wins.
func TestAgentNamespaceFromEnv(t *testing.T) {
	t.Setenv(AgentNamespaceEnv, "podcap-elsewhere")
	te := lsEnv(t)
	err := te.run(t, "ls")
	if err == nil || !strings.Contains(err.Error(), "namespace podcap-elsewhere") {
		t.Fatalf("ls with %s=podcap-elsewhere: %v, want no agents found in podcap-elsewhere", AgentNamespaceEnv, err)
	}
	te = lsEnv(t)
	if err := te.run(t, "ls", "--agent-namespace", DefaultAgentNamespace); err != nil || !strings.Contains(te.out.String(), "web") {
		t.Fatalf("ls --agent-namespace %s: %v\n%s", DefaultAgentNamespace, err, te.out)
	}
}
