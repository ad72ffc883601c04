package monitoring_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/podcap/podcap/deploy/monitoring"
	"github.com/podcap/podcap/deploy/monitoring/dashboard"
)

const regenerate = "run `go generate ./deploy/monitoring/` and commit the result"

// TestGeneratedFilesUpToDate: the checked-in PrometheusRule and dashboard JSON are what the
// generator makes of podcap-rules.yaml and package dashboard.
func TestGeneratedFilesUpToDate(t *testing.T) {
	rules, err := os.ReadFile(monitoring.RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	wantPR, err := monitoring.PrometheusRule(rules)
	if err != nil {
		t.Fatal(err)
	}
	wantDash, err := dashboard.JSON()
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string][]byte{monitoring.PrometheusRuleFile: wantPR, monitoring.DashboardFile: wantDash} {
		got, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("deploy/monitoring/%s differs from what the generator makes (first difference at line %d): %s",
				file, firstDiffLine(got, want), regenerate)
		}
	}
}

func firstDiffLine(a, b []byte) int {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}

// TestPrometheusRuleHoldsTheRulesFile: the PrometheusRule's spec is the rules file's groups,
// compared as data (independently of how PrometheusRule writes it), and PrometheusRule
// refuses a file without groups.
func TestPrometheusRuleHoldsTheRulesFile(t *testing.T) {
	rules, err := os.ReadFile(monitoring.RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := os.ReadFile(monitoring.PrometheusRuleFile)
	if err != nil {
		t.Fatal(err)
	}
	var file, obj map[string]any
	if err := yaml.Unmarshal(rules, &file); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(pr, &obj); err != nil {
		t.Fatal(err)
	}
	if obj["apiVersion"] != "monitoring.coreos.com/v1" || obj["kind"] != "PrometheusRule" {
		t.Errorf("%s: apiVersion %v kind %v", monitoring.PrometheusRuleFile, obj["apiVersion"], obj["kind"])
	}
	if !reflect.DeepEqual(obj["spec"], file) {
		t.Errorf("%s: spec differs from %s: %s", monitoring.PrometheusRuleFile, monitoring.RulesFile, regenerate)
	}
	if _, err := monitoring.PrometheusRule([]byte("# no groups\nrules: []\n")); err == nil {
		t.Error("PrometheusRule of a file without groups: no error")
	}
}

// TestRulesAreComplete: every alert has a severity, a for: duration, a summary, a description
// and a runbook_url pointing at its section of deploy/monitoring/README.md.
func TestRulesAreComplete(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var anchors []string
	for _, m := range regexp.MustCompile(`(?m)^#+ (\S+)$`).FindAllStringSubmatch(string(readme), -1) {
		anchors = append(anchors, strings.ToLower(m[1]))
	}
	n := 0
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				t.Errorf("%s: severity %q", r.Alert, r.Labels["severity"])
			}
			if d, err := time.ParseDuration(r.For); err != nil || d < time.Minute {
				t.Errorf("%s: for %q, want at least 1m", r.Alert, r.For)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s", r.Alert, a)
				}
			}
			want := "https://github.com/podcap/podcap/blob/main/deploy/monitoring/README.md#" + strings.ToLower(r.Alert)
			if r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !slices.Contains(anchors, strings.ToLower(r.Alert)) {
				t.Errorf("%s: no section %q in deploy/monitoring/README.md (its runbook)", r.Alert, "### "+r.Alert)
			}
		}
	}
	if n < 12 {
		t.Errorf("%d alerts in %s, want at least 12", n, monitoring.RulesFile)
	}
}

// TestEveryAlertHasPromtoolTests: every alert of the rules file is expected to fire in a test
// of tests/*.yaml, and expected not to fire (exp_alerts empty) at another eval_time; every
// test file loads the rules file. `make monitoring-test` runs them with promtool.
func TestEveryAlertHasPromtoolTests(t *testing.T) {
	files, err := filepath.Glob("tests/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("tests/*.yaml: %v %v", files, err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var tf struct {
			RuleFiles []string `json:"rule_files"`
			Tests     []struct {
				AlertRuleTest []struct {
					Alertname string `json:"alertname"`
					ExpAlerts []any  `json:"exp_alerts"`
				} `json:"alert_rule_test"`
			} `json:"tests"`
		}
		if err := yaml.Unmarshal(b, &tf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !slices.Equal(tf.RuleFiles, []string{"../" + monitoring.RulesFile}) {
			t.Errorf("%s: rule_files %v, want [../%s]", f, tf.RuleFiles, monitoring.RulesFile)
		}
		for _, tc := range tf.Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					silent[a.Alertname] = true
				}
			}
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if !fires[r.Alert] {
				t.Errorf("%s: no promtool test in tests/*.yaml where it fires", r.Alert)
			}
			if !silent[r.Alert] {
				t.Errorf("%s: no promtool test in tests/*.yaml where it does not fire", r.Alert)
			}
		}
	}
}

// TestComponent: the Component's PodMonitor selects the DaemonSet's pods and names its
// metrics port; with kubectl on PATH, an overlay of deploy/ with the Component builds and
// holds the PodMonitor, the PrometheusRule and the dashboard's ConfigMap with the JSON.
func TestComponent(t *testing.T) {
	var ds struct {
		Spec struct {
			Template struct {
				Metadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
				Spec struct {
					Containers []struct {
						Ports []struct {
							Name          string `json:"name"`
							ContainerPort int    `json:"containerPort"`
						} `json:"ports"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	readYAML(t, "../daemonset.yaml", &ds)
	var pm struct {
		Metadata struct {
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			PodMetricsEndpoints []struct {
				Port        string `json:"port"`
				HonorLabels bool   `json:"honorLabels"`
				Relabelings []struct {
					SourceLabels []string `json:"sourceLabels"`
					TargetLabel  string   `json:"targetLabel"`
					Replacement  string   `json:"replacement"`
				} `json:"relabelings"`
			} `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	readYAML(t, "podmonitor.yaml", &pm)
	for k, v := range pm.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("PodMonitor selects %s=%s, the DaemonSet's pods have %v", k, v, ds.Spec.Template.Metadata.Labels)
		}
	}
	if len(pm.Spec.Selector.MatchLabels) == 0 || len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("PodMonitor: %+v", pm.Spec)
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if !slices.ContainsFunc(ds.Spec.Template.Spec.Containers[0].Ports, func(p struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	}) bool {
		return p.Name == ep.Port && p.ContainerPort == 9695
	}) {
		t.Errorf("PodMonitor port %q is not the DaemonSet's metrics port (9695)", ep.Port)
	}
	if !ep.HonorLabels {
		t.Error("PodMonitor: honorLabels is off: the per-capture namespace and pod labels would be renamed")
	}
	relabeled := map[string]string{}
	for _, r := range ep.Relabelings {
		relabeled[r.TargetLabel] = strings.Join(r.SourceLabels, ",") + r.Replacement
	}
	if relabeled["node"] != "__meta_kubernetes_pod_node_name" || relabeled["job"] != "podcap-agent" {
		t.Errorf("PodMonitor relabelings %v: want node from __meta_kubernetes_pod_node_name, job podcap-agent (what the alerts select)", relabeled)
	}

	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not on PATH: the overlay is not built")
	}
	deploy, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, deploy) // kustomize takes no absolute paths
	if err != nil {
		t.Fatal(err)
	}
	overlay := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- " + rel +
		"\ncomponents:\n- " + filepath.Join(rel, "monitoring") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", dir).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v %s", err, stderrOf(err))
	}
	dashJSON, err := os.ReadFile(monitoring.DashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var o struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string            `json:"name"`
				Namespace string            `json:"namespace"`
				Labels    map[string]string `json:"labels"`
			} `json:"metadata"`
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatal(err)
		}
		key := o.Kind + "/" + o.Metadata.Name
		switch key {
		case "PodMonitor/podcap-agent", "PrometheusRule/podcap-agent":
		case "ConfigMap/podcap-grafana-dashboard":
			if o.Metadata.Labels["grafana_dashboard"] != "1" {
				t.Errorf("%s: labels %v, want grafana_dashboard: \"1\"", key, o.Metadata.Labels)
			}
			if o.Data["podcap.json"] != string(dashJSON) {
				t.Errorf("%s: data podcap.json is not %s", key, monitoring.DashboardFile)
			}
		default:
			continue
		}
		found[key] = true
		if o.Metadata.Namespace != "podcap-system" {
			t.Errorf("%s: namespace %q", key, o.Metadata.Namespace)
		}
	}
	if len(found) != 3 {
		t.Errorf("the overlay holds %v, want the PodMonitor, the PrometheusRule and the dashboard's ConfigMap", found)
	}
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// TestAgentLinksNoMonitoringDeps: the dashboard's and the tests' modules (the Grafana SDK,
// Prometheus's parser) stay out of the agent binary.
func TestAgentLinksNoMonitoringDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("go list -deps: not in -short")
	}
	out, err := exec.CommandContext(t.Context(), filepath.Join(runtime.GOROOT(), "bin", "go"),
		"list", "-deps", "github.com/podcap/podcap/cmd/podcap-agent").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v %s", err, stderrOf(err))
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/prometheus/client_golang/prometheus") {
		t.Fatalf("go list -deps gave %d packages without client_golang: not the agent's list?", len(deps))
	}
	for _, p := range deps {
		if strings.HasPrefix(p, "github.com/grafana/") || strings.HasPrefix(p, "github.com/prometheus/prometheus/") ||
			strings.HasPrefix(p, "github.com/podcap/podcap/deploy/") {
			t.Errorf("the agent links %s", p)
		}
	}
}

// TestPromtool runs what `make monitoring-test` runs when promtool (Debian's prometheus) is
// on PATH: `promtool check rules` and `promtool test rules tests/*.yaml`.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH (make monitoring-test installs it)")
	}
	tests, err := filepath.Glob("tests/*.yaml") // their rule_files are relative to them
	if err != nil || len(tests) == 0 {
		t.Fatalf("tests/*.yaml: %v %v", tests, err)
	}
	for _, args := range [][]string{
		{"check", "rules", monitoring.RulesFile},
		append([]string{"test", "rules"}, tests...),
	} {
		cmd := exec.CommandContext(t.Context(), promtool, args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
