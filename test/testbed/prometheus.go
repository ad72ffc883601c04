package testbed

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// PrometheusBinary and PromtoolBinary are Debian's prometheus.
const (
	PrometheusBinary = "/usr/bin/prometheus"
	PromtoolBinary   = "/usr/bin/promtool"
)

// PrometheusOptions configure StartPrometheus.
type PrometheusOptions struct {
	// Targets are scraped each with its own static labels, by their job.
	Targets []ScrapeTarget
	// Rules is a rule file (`groups:` ...), e.g. an alerting rule on a MetricPod's metric;
	// empty: no rules. A group without its own interval is evaluated every EvaluationInterval.
	Rules string
	// AlertmanagerURL is where alerts go (AlertmanagerProcess.URL); empty: nowhere.
	AlertmanagerURL string
	// ScrapeInterval and EvaluationInterval; default 1s each.
	ScrapeInterval, EvaluationInterval time.Duration
	// Args are extra flags, after the test bed's; the default
	// --rules.alert.resend-delay=1s (firing alerts re-sent every second) is left out if
	// they set it.
	Args []string
}

// ScrapeTarget is a static scrape target: host:port and labels every series of it gets.
type ScrapeTarget struct {
	Address string
	Labels  map[string]string
	// Job is the target's job label; "" is "test". A scraped series keeps its own labels
	// where they clash with the target's (honor_labels), as podcap's PodMonitor asks.
	Job string
}

// PrometheusProcess is a real Prometheus (Debian's prometheus) on 127.0.0.1:<free port>,
// its TSDB, config and rules in a scratch dir.
type PrometheusProcess struct {
	ConfigPath, RulesPath string
	d                     *daemon
}

// StartPrometheus writes the config and rules (checked with `promtool check config`), starts
// Prometheus with --web.enable-lifecycle and waits until it is ready. The test's cleanup
// stops it (its log is printed if the test failed); `cluster.sh down` kills it if the test
// binary dies.
func (c *Cluster) StartPrometheus(t testing.TB, opts PrometheusOptions) *PrometheusProcess {
	t.Helper()
	bin, err := lookBinary(PrometheusBinary, "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lookBinary(PromtoolBinary, "prometheus"); err != nil {
		t.Fatal(err)
	}
	p := &PrometheusProcess{d: c.newDaemon(t, "prometheus")}
	p.ConfigPath = filepath.Join(p.d.dir, "prometheus.yml")
	p.RulesPath = filepath.Join(p.d.dir, "rules.yml")
	cfg, err := p.render(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.ConfigPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if opts.Rules != "" {
		if err := os.WriteFile(p.RulesPath, []byte(opts.Rules), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	// checks the rule files it names too
	if err := checkConfig(ctx, p.ConfigPath, PromtoolBinary, "check", "config", p.ConfigPath); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--config.file=" + p.ConfigPath,
		"--storage.tsdb.path=" + filepath.Join(p.d.dir, "data"),
		"--web.listen-address=" + p.d.addr,
		"--web.enable-lifecycle",
	}
	if !hasFlag(opts.Args, "rules.alert.resend-delay") {
		args = append(args, "--rules.alert.resend-delay=1s")
	}
	c.startDaemon(t, p.d, bin, append(args, opts.Args...))
	if err := p.d.waitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// URL is Prometheus's base URL, http://127.0.0.1:PORT.
func (p *PrometheusProcess) URL() string { return p.d.url("") }

// Log returns what Prometheus has written so far.
func (p *PrometheusProcess) Log() string { return p.d.log() }

// Stop sends SIGTERM, waits up to DaemonStopTimeout (then SIGKILL) and returns the exit
// status. The test's cleanup calls it too.
func (p *PrometheusProcess) Stop() error { return p.d.stop() }

// Sample is one element of an instant vector.
type Sample struct {
	Labels    map[string]string
	Value     float64
	Timestamp time.Time
}

// Query evaluates expr now (GET /api/v1/query) and returns the vector's samples; an
// expression whose result is not a vector is an error.
func (p *PrometheusProcess) Query(ctx context.Context, expr string) ([]Sample, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"` // [unix seconds, "value"]
		} `json:"result"`
	}
	if err := p.api(ctx, "/api/v1/query?query="+url.QueryEscape(expr), &data); err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s, not vector", expr, data.ResultType)
	}
	out := make([]Sample, 0, len(data.Result))
	for _, r := range data.Result {
		ts, ok1 := r.Value[0].(float64)
		vs, ok2 := r.Value[1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("query %q: sample %v", expr, r.Value)
		}
		v, err := strconv.ParseFloat(vs, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: %w", expr, err)
		}
		out = append(out, Sample{Labels: r.Metric, Value: v, Timestamp: time.UnixMilli(int64(ts * 1000))})
	}
	return out, nil
}

// PrometheusAlert is an alert as GET /api/v1/alerts lists it.
type PrometheusAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"` // pending, firing
	ActiveAt    time.Time         `json:"activeAt"`
	Value       string            `json:"value"`
}

// Alerts lists the alerts Prometheus's rules hold now (pending and firing).
func (p *PrometheusProcess) Alerts(ctx context.Context) ([]PrometheusAlert, error) {
	var data struct {
		Alerts []PrometheusAlert `json:"alerts"`
	}
	if err := p.api(ctx, "/api/v1/alerts", &data); err != nil {
		return nil, fmt.Errorf("prometheus alerts: %w", err)
	}
	return data.Alerts, nil
}

// api GETs an /api/v1 path and decodes the envelope's data into v.
func (p *PrometheusProcess) api(ctx context.Context, path string, v any) error {
	body, err := httpDo(ctx, http.MethodGet, p.d.url(path), nil)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return err
	}
	if env.Status != "success" {
		return fmt.Errorf("status %s: %s", env.Status, env.Error)
	}
	return json.Unmarshal(env.Data, v)
}

// prometheus.yml, the part the options fill
type (
	promConfig struct {
		Global struct {
			ScrapeInterval     string `json:"scrape_interval"`
			ScrapeTimeout      string `json:"scrape_timeout"`
			EvaluationInterval string `json:"evaluation_interval"`
		} `json:"global"`
		RuleFiles     []string           `json:"rule_files,omitempty"`
		Alerting      *promAlerting      `json:"alerting,omitempty"`
		ScrapeConfigs []promScrapeConfig `json:"scrape_configs,omitempty"`
	}
	promAlerting struct {
		Alertmanagers []promAlertmanager `json:"alertmanagers"`
	}
	promAlertmanager struct {
		Scheme        string             `json:"scheme"`
		PathPrefix    string             `json:"path_prefix,omitempty"`
		APIVersion    string             `json:"api_version"`
		StaticConfigs []promStaticConfig `json:"static_configs"`
	}
	promScrapeConfig struct {
		JobName       string             `json:"job_name"`
		HonorLabels   bool               `json:"honor_labels"`
		StaticConfigs []promStaticConfig `json:"static_configs"`
	}
	promStaticConfig struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels,omitempty"`
	}
)

func (p *PrometheusProcess) render(opts PrometheusOptions) ([]byte, error) {
	var cfg promConfig
	scrape := orDefault(opts.ScrapeInterval, time.Second)
	cfg.Global.ScrapeInterval = promDuration(scrape)
	cfg.Global.ScrapeTimeout = promDuration(scrape)
	cfg.Global.EvaluationInterval = promDuration(orDefault(opts.EvaluationInterval, time.Second))
	if opts.Rules != "" {
		cfg.RuleFiles = []string{p.RulesPath}
	}
	if opts.AlertmanagerURL != "" {
		u, err := url.Parse(opts.AlertmanagerURL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("AlertmanagerURL %q: want http(s)://host:port[/prefix]", opts.AlertmanagerURL)
		}
		cfg.Alerting = &promAlerting{Alertmanagers: []promAlertmanager{{
			Scheme: u.Scheme, PathPrefix: strings.TrimSuffix(u.Path, "/"), APIVersion: "v2",
			StaticConfigs: []promStaticConfig{{Targets: []string{u.Host}}},
		}}}
	}
	jobs := map[string]int{} // job name → index in ScrapeConfigs
	for _, tg := range opts.Targets {
		name := cmp.Or(tg.Job, "test")
		i, ok := jobs[name]
		if !ok {
			i, jobs[name] = len(cfg.ScrapeConfigs), len(cfg.ScrapeConfigs)
			cfg.ScrapeConfigs = append(cfg.ScrapeConfigs, promScrapeConfig{JobName: name, HonorLabels: true})
		}
		cfg.ScrapeConfigs[i].StaticConfigs = append(cfg.ScrapeConfigs[i].StaticConfigs, promStaticConfig{Targets: []string{tg.Address}, Labels: tg.Labels})
	}
	return yaml.Marshal(cfg)
}
