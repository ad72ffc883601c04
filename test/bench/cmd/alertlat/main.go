// Command alertlat measures, on a real cluster with a running podcap agent (webhook on,
// rules/alerts.rego loaded) and a real Alertmanager pointed at it, how long an alert takes to
// become packets on disk, and how many alerts a second the webhook records:
//
//	alertlat -webhook https://127.0.0.1:P/api/v1/alerts -token-file F -ca-file CRT \
//	  -alertmanager http://127.0.0.1:Q -metrics http://127.0.0.1:R/metrics \
//	  -kubeconfig ADMIN -capture-dir DIR -namespace default -pod bench-traffic \
//	  [-n 20] [-blast 1000] [-blast-configs 1x8,200x5] [-out alerts.jsonl]
//
// Three measurements, in this order; one JSON object per capture or blast goes to -out:
//
//   - direct (-n rounds): a distinct firing alert naming the pod (annotations podcap_stop_grace
//     0s, podcap_cooldown 0s) is POSTed to the webhook as Alertmanager sends it (payload v4);
//     t0 is taken just before the POST. post_ms: the answer (200 = the CaptureAlert applied);
//     file_ms: the new alert-*/ session's first pcapng file exists; packet_ms: it holds a
//     packet (read with a pcapng reader). Then the alert is POSTed resolved and stop_ms is
//     the time until podcap_captures_running{source="alert"} is 0 again.
//   - alertmanager (-n rounds): the same alert is POSTed to Alertmanager's /api/v2/alerts
//     instead (its route: group_wait 0). Alertmanager's own POST to the webhook cannot be seen
//     from outside; notify_ms is the CaptureAlert's status.lastNotifiedAt (the agent's clock,
//     the same host's, taken as the agent records the alert: after Alertmanager's POST
//     arrived and was decoded, before the object is written) minus t0, and
//     packet_after_notify_ms = packet_ms - notify_ms: the agent's part from the moment it
//     holds Alertmanager's notification. packet_ms is from the POST to Alertmanager.
//     The resolve goes through Alertmanager too (EndsAt in the past).
//   - blast (-blast alerts per config): distinct alerts that name no pod, in notifications of
//     B alerts, C in flight at once; a 503 is sent again (as Alertmanager retries). alerts_per_s
//     = alerts recorded / seconds from the first POST to the last answer; a notification not
//     taken within a minute of 503s is given up, counted in the error and not in recorded.
//
// Every wait is a poll with a deadline (-timeout); a round that misses one is recorded with an
// error and the command exits 1 at the end. Numbers are not judged here.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podcap/podcap/agent/alerts"
	"github.com/podcap/podcap/test/bench/internal/poll"
	"github.com/podcap/podcap/test/testbed"
)

type options struct {
	webhook, tokenFile, caFile string
	alertmanager, metrics      string
	kubeconfig, alertNamespace string
	dir, namespace, pod        string
	n, blast                   int
	blastConfigs               string
	poll, timeout              time.Duration
	out                        string
}

func main() {
	var o options
	flag.StringVar(&o.webhook, "webhook", "", "the agent's webhook URL (https://…/api/v1/alerts)")
	flag.StringVar(&o.tokenFile, "token-file", "", "the webhook's bearer token")
	flag.StringVar(&o.caFile, "ca-file", "", "PEM certificate(s) the agent's serving certificate is verified with")
	flag.StringVar(&o.alertmanager, "alertmanager", "", "Alertmanager's base URL (routes to the webhook with group_wait 0); empty: no alertmanager rounds")
	flag.StringVar(&o.metrics, "metrics", "", "the agent's /metrics URL")
	flag.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig that may read CaptureAlert objects")
	flag.StringVar(&o.alertNamespace, "alert-namespace", "podcap-system", "the agent's --alert-namespace")
	flag.StringVar(&o.dir, "capture-dir", "", "the agent's --capture-dir")
	flag.StringVar(&o.namespace, "namespace", "default", "the pod's namespace")
	flag.StringVar(&o.pod, "pod", "", "the pod the alerts name (it must send traffic steadily)")
	flag.IntVar(&o.n, "n", 20, "capture rounds, each direct and through Alertmanager")
	flag.IntVar(&o.blast, "blast", 1000, "alerts per blast configuration (0: no blast)")
	flag.StringVar(&o.blastConfigs, "blast-configs", "1x8,200x5", "blast configurations: alerts per notification x notifications in flight")
	flag.DurationVar(&o.poll, "poll", time.Millisecond, "file poll interval")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline of each wait")
	flag.StringVar(&o.out, "out", "", "append one JSON line per round or blast to this file")
	flag.Parse()
	if o.webhook == "" || o.tokenFile == "" || o.caFile == "" || o.metrics == "" || o.dir == "" || o.pod == "" || o.n < 0 || o.blast < 0 {
		fmt.Fprintln(os.Stderr, "alertlat: -webhook, -token-file, -ca-file, -metrics, -capture-dir and -pod are required")
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "alertlat:", err)
		os.Exit(1)
	}
}

// bench holds what every measurement uses.
type bench struct {
	o       options
	hook    *http.Client
	token   string
	objects dynamic.ResourceInterface
	podDir  string
	runID   string // distinguishes this run's alerts from an earlier run's
	out     io.Writer
}

func run(ctx context.Context, o options) error {
	tok, err := os.ReadFile(o.tokenFile)
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(o.caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("no certificate in %s", o.caFile)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	b := &bench{
		o:     o,
		token: strings.TrimSpace(string(tok)),
		hook: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64,
		}},
		objects: dyn.Resource(alerts.CaptureAlertGVR).Namespace(o.alertNamespace),
		podDir:  filepath.Join(o.dir, o.namespace, o.pod),
		runID:   strconv.FormatInt(time.Now().UnixNano()%1e9, 36),
	}
	if o.out != "" {
		f, err := os.OpenFile(o.out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		b.out = f
	}
	emit := func(v any) error {
		line, _ := json.Marshal(v)
		fmt.Println(string(line))
		if b.out != nil {
			_, err := b.out.Write(append(line, '\n'))
			return err
		}
		return nil
	}
	// a clean start: no alert capture running
	if _, err := poll.Until(o.poll, o.timeout, func() (bool, error) { return b.running(ctx, 0) }); err != nil {
		return fmt.Errorf("an alert capture is running before the bench: %w", err)
	}
	failed := 0
	kinds := []string{"direct"}
	if o.alertmanager != "" {
		kinds = append(kinds, "alertmanager")
	}
	seq := 0
	for _, kind := range kinds {
		for i := range o.n {
			s := b.round(ctx, kind, i, seq)
			seq++
			if s.Error != "" {
				failed++
			}
			if err := emit(s); err != nil {
				return err
			}
			if s.Error != "" && s.StopMS < 0 {
				return fmt.Errorf("%s round %d: %s", kind, i, s.Error) // the agent's state is unknown: stop here
			}
		}
	}
	if o.blast > 0 {
		for ci, c := range strings.Split(o.blastConfigs, ",") {
			batch, conc, err := parseConfig(c)
			if err != nil {
				return err
			}
			// a blast whose notifications were never taken is a result (reported with its
			// error), not a failure to measure
			r := b.blastOnce(ctx, ci, batch, conc)
			if err := emit(r); err != nil {
				return err
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d rounds or blasts missed a deadline or failed", failed)
	}
	return nil
}

// firing is a firing alert in the webhook payload, as Alertmanager sends it.
func firing(fp string, labels, annotations map[string]string) testbed.WebhookAlert {
	return testbed.WebhookAlert{Status: alerts.StatusFiring, Labels: labels, Annotations: annotations, StartsAt: time.Now().UTC().Truncate(time.Second),
		GeneratorURL: "http://prometheus.bench:9090/graph", Fingerprint: fp}
}

var errUnavailable = errors.New("503")

// postHook sends one notification of as to the agent's webhook and returns its answer; a 503
// is errUnavailable (the webhook's bound: Alertmanager would retry it).
func (b *bench) postHook(ctx context.Context, as []testbed.WebhookAlert) (alerts.Recorded, error) {
	msg := testbed.NewWebhookMessage("podcap", `{}:{alertname="PodcapBench"}`, nil, as)
	code, body, err := testbed.PostWebhook(ctx, b.hook, b.o.webhook, b.token, msg)
	if err != nil {
		return alerts.Recorded{}, err
	}
	switch code {
	case http.StatusOK:
		var a alerts.Recorded
		return a, json.Unmarshal(body, &a)
	case http.StatusServiceUnavailable:
		return alerts.Recorded{}, fmt.Errorf("%w: %s", errUnavailable, body)
	}
	return alerts.Recorded{}, fmt.Errorf("webhook: %d %s: %s", code, http.StatusText(code), body)
}
