package monitoring_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/podcap/podcap/deploy/monitoring"
)

// rulesFile is the plain rules file's shape.
type rulesFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Record      string            `json:"record"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readRules(t *testing.T) rulesFile {
	t.Helper()
	b, err := os.ReadFile(monitoring.RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	if err := yaml.UnmarshalStrict(b, &rf); err != nil {
		t.Fatalf("%s: %v", monitoring.RulesFile, err)
	}
	return rf
}

// expression is one PromQL expression and where it is.
type expression struct{ where, expr string }

// ruleExpressions are the expressions of the rules file, one per rule.
func ruleExpressions(t *testing.T) []expression {
	var exprs []expression
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, expression{fmt.Sprintf("%s: %s%s", monitoring.RulesFile, r.Alert, r.Record), r.Expr})
		}
	}
	return exprs
}

// labelValuesPattern matches a query variable's label_values(selector, label).
var labelValuesPattern = regexp.MustCompile(`^label_values\((.+), *([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// dashboardExpressions are the expressions of the checked-in dashboard: every target's expr
// and every query variable's selector (with a query "label_values(SELECTOR, LABEL)" made into
// the expression "group by (LABEL) (SELECTOR)", so that the label is checked as well), and the
// dashboard's template variables.
func dashboardExpressions(t *testing.T) (exprs []expression, variables []string) {
	t.Helper()
	b, err := os.ReadFile(monitoring.DashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", monitoring.DashboardFile, err)
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("%s: panel %q target %s has no expr", monitoring.DashboardFile, p.Title, tg.RefID)
			}
			exprs = append(exprs, expression{fmt.Sprintf("panel %q %s", p.Title, tg.RefID), tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		variables = append(variables, v.Name)
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		m := labelValuesPattern.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(SELECTOR, LABEL)", v.Name, v.Query)
			continue
		}
		exprs = append(exprs, expression{"variable " + v.Name, fmt.Sprintf("group by (%s) (%s)", m[2], m[1])})
	}
	if len(exprs) < 40 {
		t.Fatalf("%s: only %d expressions found, the dashboard's structure changed?", monitoring.DashboardFile, len(exprs))
	}
	return exprs, variables
}

// Grafana's variables, as a test substitutes them: range variables by a duration, the
// dashboard's own by a value that fits the regex matchers they are used in.
var (
	grafanaRangeVars = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}`)
	templateVars     = regexp.MustCompile(`\$\{([a-zA-Z_][a-zA-Z0-9_]*)\}|\$([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// substitute replaces Grafana's variables in expr and returns the dashboard variables used.
func substitute(expr string) (string, []string) {
	expr = grafanaRangeVars.ReplaceAllString(expr, "5m")
	var used []string
	expr = templateVars.ReplaceAllStringFunc(expr, func(v string) string {
		m := templateVars.FindStringSubmatch(v)
		used = append(used, m[1]+m[2])
		return ".*"
	})
	return expr, used
}

// TestPromQL parses every PromQL expression of the dashboard and the rules with Prometheus's
// parser and checks each metric they select against the agent's registry, and each label they match or group by against that metric's labels and
// the scrape's: a metric or label the agent does not export is a panel without data or an
// alert that never fires.
func TestPromQL(t *testing.T) {
	known := agentMetrics(t)
	for name, m := range prometheusMetrics {
		known[name] = m
	}
	dashExprs, variables := dashboardExpressions(t)
	for _, e := range append(ruleExpressions(t), dashExprs...) {
		t.Run(e.where, func(t *testing.T) {
			expr, used := substitute(e.expr)
			for _, v := range used {
				if !slices.Contains(variables, v) {
					t.Errorf("uses $%s, which is not a variable of the dashboard (%v)", v, variables)
				}
			}
			if strings.Contains(expr, "$") {
				t.Errorf("a variable is left after substitution: %s", expr)
			}
			node, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
			if err != nil {
				t.Fatalf("parse %q: %v", e.expr, err)
			}
			for _, err := range checkSelectors(node, known) {
				t.Errorf("%s: %v", e.expr, err)
			}
		})
	}
}

// checkSelectors checks the metrics and labels of expr's selectors and aggregations.
func checkSelectors(expr parser.Expr, known map[string]metricInfo) []error {
	var errs []error
	// the labels a series of each subexpression may have, from its selectors
	var selectorLabels func(parser.Node) []string
	selectorLabels = func(n parser.Node) []string {
		var ls []string
		parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				ls = append(ls, seriesLabels(vs, known)...)
			}
			return nil
		})
		return ls
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			name := selectorName(n)
			if name == "" {
				errs = append(errs, fmt.Errorf("selector %s names no metric", n))
				return nil
			}
			if _, ok := metricOf(name, known); !ok {
				errs = append(errs, fmt.Errorf("metric %s is not exported by the agent", name))
				return nil
			}
			have := seriesLabels(n, known)
			for _, m := range n.LabelMatchers {
				if m.Name != labels.MetricName && !slices.Contains(have, m.Name) {
					errs = append(errs, fmt.Errorf("selector %s: %s has no label %q (has %v)", n, name, m.Name, have))
				}
			}
		case *parser.AggregateExpr:
			if n.Without {
				return nil
			}
			have := selectorLabels(n.Expr)
			for _, l := range n.Grouping {
				if !slices.Contains(have, l) {
					errs = append(errs, fmt.Errorf("%s: groups by %q, which no series under it has (%v)", n, l, have))
				}
			}
		}
		return nil
	})
	return errs
}

func selectorName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// metricOf returns the family of a series name: itself, or the histogram of a _bucket, _sum
// or _count series.
func metricOf(name string, known map[string]metricInfo) (metricInfo, bool) {
	if m, ok := known[name]; ok {
		return m, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if m, ok := known[base]; ok && m.histogram {
				return m, true
			}
		}
	}
	return metricInfo{}, false
}

// seriesLabels are the labels a series of vs's metric has: the agent's, le for a histogram
// bucket, and the scrape's.
func seriesLabels(vs *parser.VectorSelector, known map[string]metricInfo) []string {
	name := selectorName(vs)
	m, ok := metricOf(name, known)
	if !ok {
		return nil
	}
	ls := slices.Concat(m.labels, scrapeLabels)
	if strings.HasSuffix(name, "_bucket") && m.histogram {
		ls = append(ls, "le")
	}
	return ls
}

// TestCheckSelectorsCatches: the checks of TestPromQL fail for the classic mistakes.
func TestCheckSelectorsCatches(t *testing.T) {
	known := map[string]metricInfo{
		"podcap_capture_failures_total":           {labels: []string{"reason"}},
		"podcap_webhook_request_duration_seconds": {histogram: true},
		"podcap_capture_file_bytes":               {},
	}
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{`sum by (node, reason) (rate(podcap_capture_failures_total{job="podcap-agent"}[5m]))`, true},
		{`histogram_quantile(0.9, sum by (le) (rate(podcap_webhook_request_duration_seconds_bucket[5m])))`, true},
		{`rate(podcap_webhook_request_duration_seconds_sum[5m])`, true},
		{`rate(podcap_capture_failure_total[5m])`, false},                    // misspelt metric
		{`podcap_capture_failures_total{reasons="start"}`, false},            // misspelt label
		{`sum by (source) (rate(podcap_capture_failures_total[5m]))`, false}, // a label it does not have
		{`podcap_capture_file_bytes_bucket`, false},                          // not a histogram
		{`sum by (le) (rate(podcap_capture_failures_total[5m]))`, false},     // le of a counter
		{`{__name__=~"podcap_.*"}`, false},                                   // no metric named
		{`podcap_capture_file_bytes / on (instance) podcap_capture_file_bytes`, true},
	} {
		node, err := parser.NewParser(parser.Options{}).ParseExpr(tc.expr)
		if err != nil {
			t.Fatalf("parse %q: %v", tc.expr, err)
		}
		if errs := checkSelectors(node, known); (len(errs) == 0) != tc.ok {
			t.Errorf("%s: errors %v, want ok=%v", tc.expr, errs, tc.ok)
		}
	}
	if expr, used := substitute(`rate(x{node=~"$node", namespace=~"${namespace}"}[$__rate_interval])`); expr != `rate(x{node=~".*", namespace=~".*"}[5m])` ||
		!slices.Equal(used, []string{"node", "namespace"}) {
		t.Errorf("substitute = %q, %v", expr, used)
	}
}
