package policy

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/tester"
	"sigs.k8s.io/yaml"
)

// rulesDir holds the shipped policies and their tests.
const rulesDir = "../rules"

// TestRules runs the Rego tests of rules/ (*_test.rego, test_ rules) with the compiler the
// engine uses: Rego v1, strict, without the denied built-ins.
func TestRules(t *testing.T) {
	files, err := readDir(rulesDir, true)
	if err != nil {
		t.Fatal(err)
	}
	modules, err := parse(files, true)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := tester.NewRunner().SetCompiler(newCompiler()).SetModules(modules).RunTests(context.Background(), nil)
	if err != nil {
		t.Fatalf("compile rules and tests: %v", err)
	}
	n := 0
	for r := range ch {
		n++
		switch {
		case r.Error != nil:
			t.Errorf("%s: %s: %v", r.Location, r.Name, r.Error)
		case r.Fail && r.FailedAt != nil:
			t.Errorf("%s: %s: FAIL at %s:%d: %s", r.Location, r.Name, r.FailedAt.Location.File, r.FailedAt.Location.Row, r.FailedAt)
		case r.Fail:
			t.Errorf("%s: %s: FAIL", r.Location, r.Name)
		case r.Skip:
			t.Logf("%s: %s: skipped", r.Location, r.Name)
		}
	}
	if n == 0 {
		t.Fatal("no Rego tests found in rules/")
	}
	t.Logf("%d Rego tests", n)
}

// TestRulesHaveTests: every shipped policy file has its own *_test.rego.
func TestRulesHaveTests(t *testing.T) {
	for _, name := range policyFiles(t) {
		test := strings.TrimSuffix(name, ".rego") + "_test.rego"
		if _, err := os.Stat(filepath.Join(rulesDir, test)); err != nil {
			t.Errorf("%s has no tests: %v", name, err)
		}
	}
}

// TestKustomization: the ConfigMap generated from rules/ holds exactly the policy files.
func TestKustomization(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(rulesDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Namespace        string `json:"namespace"`
		GeneratorOptions struct {
			DisableNameSuffixHash bool `json:"disableNameSuffixHash"`
		} `json:"generatorOptions"`
		ConfigMapGenerator []struct {
			Name  string   `json:"name"`
			Files []string `json:"files"`
		} `json:"configMapGenerator"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	if k.Namespace != "podcap-system" || !k.GeneratorOptions.DisableNameSuffixHash ||
		len(k.ConfigMapGenerator) != 1 || k.ConfigMapGenerator[0].Name != "podcap-rules" {
		t.Fatalf("kustomization = %+v: want one ConfigMap podcap-rules in podcap-system without hash suffix", k)
	}
	got := slices.Sorted(slices.Values(k.ConfigMapGenerator[0].Files))
	if want := policyFiles(t); !slices.Equal(got, want) {
		t.Errorf("configMapGenerator files = %v\nwant the policy files %v", got, want)
	}
}

// policyFiles are the names of the shipped policy files, sorted.
func policyFiles(t *testing.T) []string {
	t.Helper()
	files, err := readDir(rulesDir, false)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.name)
	}
	if len(names) == 0 {
		t.Fatal("no policy files in rules/")
	}
	return names
}
