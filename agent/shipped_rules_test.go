package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/native"
)

// TestShippedRuleFiltersCompile compiles every filter the shipped rules write literally (a
// "filter": "<string>" in any object of rules/*.rego, not the tests) with the agent's own
// validators: capture.FilterChecker (its text rules, then the real `tcpdump -d -y LINUX_SLL2`)
// and the native engine's, so that a shipped rule can never decide a filter the agent refuses
// (InvalidPolicyDecision: no capture). It needs tcpdump on PATH.
func TestShippedRuleFiltersCompile(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Skip("tcpdump is not on PATH: the filters cannot be compiled")
	}
	files, err := filepath.Glob("../rules/*.rego")
	if err != nil {
		t.Fatal(err)
	}
	var filters []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.rego") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ast.ParseModuleWithOpts(name, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatal(err)
		}
		ast.WalkTerms(m, func(term *ast.Term) bool {
			obj, ok := term.Value.(ast.Object)
			if !ok {
				return false
			}
			if v := obj.Get(ast.StringTerm("filter")); v != nil {
				if s, ok := v.Value.(ast.String); ok {
					filters = append(filters, string(s))
					t.Logf("%s: filter %q", filepath.Base(name), string(s))
				}
			}
			return false
		})
	}
	if len(filters) == 0 {
		t.Fatal("no literal filter found in rules/*.rego (dns.rego has one)")
	}
	tcp, nat := capture.NewFilterChecker(tcpdump), native.NewFilterChecker(tcpdump)
	for _, f := range filters {
		if err := tcp.Check(context.Background(), f); err != nil {
			t.Errorf("filter %q: the agent refuses it: %v", f, err)
		}
		if err := nat.Check(context.Background(), f); err != nil {
			t.Errorf("filter %q: the native engine refuses it: %v", f, err)
		}
	}
}
