// Command gen writes deploy/monitoring's generated files: the PrometheusRule made from
// podcap-rules.yaml and the dashboard's JSON. Run by `go generate ./deploy/monitoring/`, in
// that directory.
package main

import (
	"fmt"
	"os"

	"github.com/podcap/podcap/deploy/monitoring"
	"github.com/podcap/podcap/deploy/monitoring/dashboard"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run() error {
	rules, err := os.ReadFile(monitoring.RulesFile)
	if err != nil {
		return err
	}
	pr, err := monitoring.PrometheusRule(rules)
	if err != nil {
		return err
	}
	if err := os.WriteFile(monitoring.PrometheusRuleFile, pr, 0o644); err != nil {
		return err
	}
	js, err := dashboard.JSON()
	if err != nil {
		return err
	}
	return os.WriteFile(monitoring.DashboardFile, js, 0o644)
}
