package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// AlertmanagerBinary and AmtoolBinary are Debian's prometheus-alertmanager.
const (
	AlertmanagerBinary = "/usr/bin/prometheus-alertmanager"
	AmtoolBinary       = "/usr/bin/amtool"
)

// AlertmanagerOptions configure StartAlertmanager and Reload.
type AlertmanagerOptions struct {
	// Config, if set, is the whole alertmanager.yml, written as is; every field below but
	// Args is then ignored.
	Config string
	// Webhooks are the receivers. Each gets a route of its own under the root (with its
	// Matchers, continue: true), so that every matching alert reaches every webhook; the
	// root route's receiver has no integrations.
	Webhooks []Webhook
	// GroupBy of the root route; default ["..."]: every label set is a group of its own.
	GroupBy []string
	// GroupWait of the root route; the zero value is Alertmanager's 0s: notify at once.
	GroupWait time.Duration
	// GroupInterval of the root route; default 1s. It also paces resolved notifications and,
	// rounded up to it, RepeatInterval.
	GroupInterval time.Duration
	// RepeatInterval of the root route; default 1h.
	RepeatInterval time.Duration
	// Args are extra flags, after the test bed's.
	Args []string
}

// Webhook is an Alertmanager webhook receiver (webhook_configs).
type Webhook struct {
	Name string // receiver name; default "webhook-<index>"
	URL  string
	// BearerToken, if set, is written to a file in the Alertmanager's scratch dir that
	// http_config.authorization.credentials_file names; BearerTokenFile names a file the test
	// writes (and may rewrite: Alertmanager reads it for every request). At most one.
	BearerToken     string
	BearerTokenFile string
	// CAFile is tls_config.ca_file: PEM certificates that sign the server's, or the server's
	// own self-signed certificate (AgentProcess.WriteCertificatePEM writes an agent's).
	CAFile             string
	InsecureSkipVerify bool  // tls_config.insecure_skip_verify; prefer CAFile
	SendResolved       *bool // default true, as Alertmanager's
	MaxAlerts          int   // max_alerts; 0: no limit
	// Matchers of the receiver's route, e.g. `alertname="TestFault"`; none: every alert.
	Matchers []string
}

// AlertmanagerProcess is a real Alertmanager (Debian's prometheus-alertmanager) on
// 127.0.0.1:<free port>, without gossip (--cluster.listen-address=), its storage and config
// in a scratch dir.
type AlertmanagerProcess struct {
	ConfigPath string // alertmanager.yml
	d          *daemon
}

// StartAlertmanager writes the config (checked with `amtool check-config`), starts
// Alertmanager and waits until it is ready. The test's cleanup stops it (its log is printed
// if the test failed); `cluster.sh down` kills it if the test binary dies.
func (c *Cluster) StartAlertmanager(t testing.TB, opts AlertmanagerOptions) *AlertmanagerProcess {
	t.Helper()
	bin, err := lookBinary(AlertmanagerBinary, "prometheus-alertmanager")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lookBinary(AmtoolBinary, "prometheus-alertmanager"); err != nil {
		t.Fatal(err)
	}
	a := &AlertmanagerProcess{d: c.newDaemon(t, "alertmanager")}
	a.ConfigPath = filepath.Join(a.d.dir, "alertmanager.yml")
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	if err := a.writeConfig(ctx, opts); err != nil {
		t.Fatal(err)
	}
	args := append([]string{
		"--config.file=" + a.ConfigPath,
		"--storage.path=" + filepath.Join(a.d.dir, "data"),
		"--web.listen-address=" + a.d.addr,
		"--cluster.listen-address=", // no gossip: nothing else listens
		"--log.level=debug",         // notification attempts and their failures
	}, opts.Args...)
	c.startDaemon(t, a.d, bin, args)
	if err := a.d.waitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return a
}

// URL is Alertmanager's base URL, http://127.0.0.1:PORT (Prometheus's alerting target).
func (a *AlertmanagerProcess) URL() string { return a.d.url("") }

// Address is host:port.
func (a *AlertmanagerProcess) Address() string { return a.d.addr }

// Log returns what Alertmanager has written so far.
func (a *AlertmanagerProcess) Log() string { return a.d.log() }

// Stop sends SIGTERM, waits up to DaemonStopTimeout (then SIGKILL) and returns the exit
// status. The test's cleanup calls it too.
func (a *AlertmanagerProcess) Stop() error { return a.d.stop() }

// Reload rewrites the config from opts (opts.Args are ignored: flags stay), checks it with
// amtool and makes Alertmanager load it (POST /-/reload). A config that fails the check
// leaves the running one in place.
func (a *AlertmanagerProcess) Reload(ctx context.Context, opts AlertmanagerOptions) error {
	if err := a.writeConfig(ctx, opts); err != nil {
		return err
	}
	if _, err := a.do(ctx, http.MethodPost, "/-/reload", nil); err != nil {
		return fmt.Errorf("alertmanager reload: %w", err)
	}
	return nil
}

// Alert is an alert as Alertmanager's v2 API takes it (POST /api/v2/alerts) and shows it.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt,omitzero"`
	EndsAt       time.Time         `json:"endsAt,omitzero"` // in the past: resolved
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// AlertmanagerAlert is an alert as GET /api/v2/alerts lists it.
type AlertmanagerAlert struct {
	Alert
	Fingerprint string    `json:"fingerprint"`
	UpdatedAt   time.Time `json:"updatedAt"`
	Receivers   []struct {
		Name string `json:"name"`
	} `json:"receivers"`
	Status struct {
		State       string   `json:"state"` // active, suppressed, unprocessed
		SilencedBy  []string `json:"silencedBy"`
		InhibitedBy []string `json:"inhibitedBy"`
	} `json:"status"`
}

// PostAlerts injects alerts as a Prometheus would (POST /api/v2/alerts), for tests that need
// no Prometheus. Alertmanager resolves an alert by itself at its EndsAt (default: 5 min after
// it was last posted); post it again with EndsAt in the past to resolve it now.
func (a *AlertmanagerProcess) PostAlerts(ctx context.Context, alerts ...Alert) error {
	return PostAlertmanagerAlerts(ctx, a.URL(), alerts...)
}

// PostAlertmanagerAlerts is PostAlerts to the Alertmanager at baseURL (http://host:port).
func PostAlertmanagerAlerts(ctx context.Context, baseURL string, alerts ...Alert) error {
	body, err := json.Marshal(alerts)
	if err != nil {
		return err
	}
	if _, err := httpDo(ctx, http.MethodPost, strings.TrimSuffix(baseURL, "/")+"/api/v2/alerts", body); err != nil {
		return fmt.Errorf("alertmanager post alerts: %w", err)
	}
	return nil
}

// Alerts lists Alertmanager's alerts (GET /api/v2/alerts: active, silenced and inhibited).
func (a *AlertmanagerProcess) Alerts(ctx context.Context) ([]AlertmanagerAlert, error) {
	body, err := a.do(ctx, http.MethodGet, "/api/v2/alerts", nil)
	if err != nil {
		return nil, fmt.Errorf("alertmanager alerts: %w", err)
	}
	var alerts []AlertmanagerAlert
	if err := json.Unmarshal(body, &alerts); err != nil {
		return nil, fmt.Errorf("alertmanager alerts: %w", err)
	}
	return alerts, nil
}

// Metric is the sum of Alertmanager's /metrics series of name whose labels include labels,
// e.g. ("alertmanager_notifications_failed_total", {"integration": "webhook"}); an error if
// none matches (ScrapeMetric).
func (a *AlertmanagerProcess) Metric(ctx context.Context, name string, labels map[string]string) (float64, error) {
	return ScrapeMetric(ctx, a.d.url("/metrics"), name, labels)
}

// do sends a request and returns the body of a 2xx answer, else an error with it.
func (a *AlertmanagerProcess) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	return httpDo(ctx, method, a.d.url(path), body)
}

func httpDo(ctx context.Context, method, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// writeConfig renders opts (with the token files it names), checks the result with amtool
// and only then replaces the config file.
func (a *AlertmanagerProcess) writeConfig(ctx context.Context, opts AlertmanagerOptions) error {
	cfg := []byte(opts.Config)
	if opts.Config == "" {
		var err error
		if cfg, err = a.render(opts); err != nil {
			return err
		}
	}
	next := a.ConfigPath + ".next"
	if err := os.WriteFile(next, cfg, 0o644); err != nil {
		return err
	}
	if err := checkConfig(ctx, next, AmtoolBinary, "check-config", next); err != nil {
		return err
	}
	return os.Rename(next, a.ConfigPath)
}

// alertmanager.yml, the part the options fill
type (
	amConfig struct {
		Route     amRoute      `json:"route"`
		Receivers []amReceiver `json:"receivers"`
	}
	amRoute struct {
		Receiver       string    `json:"receiver"`
		GroupBy        []string  `json:"group_by,omitempty"`
		GroupWait      string    `json:"group_wait,omitempty"`
		GroupInterval  string    `json:"group_interval,omitempty"`
		RepeatInterval string    `json:"repeat_interval,omitempty"`
		Matchers       []string  `json:"matchers,omitempty"`
		Continue       bool      `json:"continue,omitempty"`
		Routes         []amRoute `json:"routes,omitempty"`
	}
	amReceiver struct {
		Name           string      `json:"name"`
		WebhookConfigs []amWebhook `json:"webhook_configs,omitempty"`
	}
	amWebhook struct {
		URL          string        `json:"url"`
		SendResolved bool          `json:"send_resolved"`
		MaxAlerts    int           `json:"max_alerts,omitempty"`
		HTTPConfig   *amHTTPConfig `json:"http_config,omitempty"`
	}
	amHTTPConfig struct {
		Authorization *amAuthorization `json:"authorization,omitempty"`
		TLSConfig     *amTLSConfig     `json:"tls_config,omitempty"`
	}
	amAuthorization struct {
		Type            string `json:"type"`
		CredentialsFile string `json:"credentials_file"`
	}
	amTLSConfig struct {
		CAFile             string `json:"ca_file,omitempty"`
		InsecureSkipVerify bool   `json:"insecure_skip_verify,omitempty"`
	}
)

// render turns opts into alertmanager.yml; bearer tokens go to files beside it.
func (a *AlertmanagerProcess) render(opts AlertmanagerOptions) ([]byte, error) {
	root := amRoute{
		Receiver:       "none",
		GroupBy:        opts.GroupBy,
		GroupWait:      promDuration(opts.GroupWait),
		GroupInterval:  promDuration(orDefault(opts.GroupInterval, time.Second)),
		RepeatInterval: promDuration(orDefault(opts.RepeatInterval, time.Hour)),
	}
	if len(root.GroupBy) == 0 {
		root.GroupBy = []string{"..."}
	}
	cfg := amConfig{Route: root, Receivers: []amReceiver{{Name: "none"}}}
	for i, w := range opts.Webhooks {
		name := w.Name
		if name == "" {
			name = fmt.Sprintf("webhook-%d", i)
		}
		if w.BearerToken != "" && w.BearerTokenFile != "" {
			return nil, fmt.Errorf("webhook %s: BearerToken and BearerTokenFile: set at most one", name)
		}
		hook := amWebhook{URL: w.URL, SendResolved: w.SendResolved == nil || *w.SendResolved, MaxAlerts: w.MaxAlerts}
		tokenFile := w.BearerTokenFile
		if w.BearerToken != "" {
			tokenFile = filepath.Join(a.d.dir, fmt.Sprintf("token-%d", i))
			if err := writeFile(tokenFile, []byte(w.BearerToken)); err != nil {
				return nil, err
			}
		}
		if tokenFile != "" || w.CAFile != "" || w.InsecureSkipVerify {
			hook.HTTPConfig = &amHTTPConfig{}
		}
		if tokenFile != "" {
			hook.HTTPConfig.Authorization = &amAuthorization{Type: "Bearer", CredentialsFile: tokenFile}
		}
		if w.CAFile != "" || w.InsecureSkipVerify {
			hook.HTTPConfig.TLSConfig = &amTLSConfig{CAFile: w.CAFile, InsecureSkipVerify: w.InsecureSkipVerify}
		}
		cfg.Receivers = append(cfg.Receivers, amReceiver{Name: name, WebhookConfigs: []amWebhook{hook}})
		cfg.Route.Routes = append(cfg.Route.Routes, amRoute{Receiver: name, Matchers: w.Matchers, Continue: true})
	}
	return yaml.Marshal(cfg)
}

// promDuration formats d as Prometheus and Alertmanager parse durations (whole milliseconds).
func promDuration(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
