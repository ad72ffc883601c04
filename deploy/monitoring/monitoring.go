// Package monitoring holds what deploy/monitoring ships besides the dashboard's generator: the
// PrometheusRule made from the plain rules file podcap-rules.yaml (the one source of the
// alerts), and the tests of the rules, the dashboard and the Component.
//
// Regenerate the PrometheusRule and the dashboard's JSON after editing podcap-rules.yaml or
// package dashboard:
//
//	go generate ./deploy/monitoring/
package monitoring

//go:generate go run ./gen

import (
	"bytes"
	"errors"
	"strings"
)

// Paths of the generated files and their sources, relative to deploy/monitoring.
const (
	RulesFile          = "podcap-rules.yaml"
	PrometheusRuleFile = "prometheusrule.yaml"
	DashboardFile      = "dashboard/podcap.json"
)

// prometheusRuleHeader is the PrometheusRule's text before its spec.
const prometheusRuleHeader = `# Generated from podcap-rules.yaml by ` + "`go generate ./deploy/monitoring/`" + `: edit that file, not this one.
# The alerts of podcap for the Prometheus Operator; the same groups, byte for byte, as the
# plain rules file (a test checks it).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: podcap-agent
  namespace: podcap-system
  labels:
    app.kubernetes.io/name: podcap
spec:
`

// PrometheusRule returns the PrometheusRule whose spec is the rules file's text from its
// "groups:" line on, indented by two spaces: byte for byte the same groups.
func PrometheusRule(rules []byte) ([]byte, error) {
	i := bytes.Index(rules, []byte("\ngroups:\n"))
	if i < 0 {
		if !bytes.HasPrefix(rules, []byte("groups:\n")) {
			return nil, errors.New(`rules file: no line "groups:"`)
		}
	} else {
		rules = rules[i+1:]
	}
	var b strings.Builder
	b.WriteString(prometheusRuleHeader)
	for _, line := range strings.SplitAfter(string(rules), "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("  ")
		}
		b.WriteString(line)
	}
	return []byte(b.String()), nil
}
