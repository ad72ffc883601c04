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
	"bufio"
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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

// sample is one capture round; durations are milliseconds from t0 (-1: not reached).
type sample struct {
	Kind          string  `json:"kind"` // direct, alertmanager
	Index         int     `json:"i"`
	Start         string  `json:"start"`
	PostMS        float64 `json:"post_ms"`                          // the POST's answer
	NotifyMS      float64 `json:"notify_ms,omitempty"`              // alertmanager: the agent recorded the notification
	FileMS        float64 `json:"file_ms"`                          // the session's first file exists
	PacketMS      float64 `json:"packet_ms"`                        // it holds a packet
	AfterNotifyMS float64 `json:"packet_after_notify_ms,omitempty"` // alertmanager: packet_ms - notify_ms
	StopMS        float64 `json:"stop_ms"`                          // from the resolve's POST to no alert capture running
	Error         string  `json:"error,omitempty"`
}

// blastResult is one blast configuration.
type blastResult struct {
	Kind        string  `json:"kind"` // blast
	Batch       int     `json:"batch"`
	Concurrency int     `json:"concurrency"`
	Alerts      int     `json:"alerts"`
	Requests    int     `json:"requests"`
	Retries503  int64   `json:"retries_503"`
	Recorded    int64   `json:"recorded"`
	Refused     int64   `json:"refused"`
	Seconds     float64 `json:"seconds"`
	AlertsPerS  float64 `json:"alerts_per_s"`
	Error       string  `json:"error,omitempty"`
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

func parseConfig(c string) (batch, conc int, err error) {
	l, r, ok := strings.Cut(strings.TrimSpace(c), "x")
	if batch, err = strconv.Atoi(l); !ok || err != nil || batch < 1 || batch > 200 {
		return 0, 0, fmt.Errorf("blast config %q: want BxC, B from 1 to 200", c)
	}
	if conc, err = strconv.Atoi(r); err != nil || conc < 1 {
		return 0, 0, fmt.Errorf("blast config %q: want BxC, C ≥ 1", c)
	}
	return batch, conc, nil
}

// round measures one capture, started by a POST to the webhook (direct) or to Alertmanager.
func (b *bench) round(ctx context.Context, kind string, i, seq int) sample {
	s := sample{Kind: kind, Index: i, FileMS: -1, PacketMS: -1, StopMS: -1}
	labels := map[string]string{"alertname": "PodcapBench", "namespace": b.o.namespace, "pod": b.o.pod,
		"bench_run": b.runID, "bench_round": strconv.Itoa(seq)}
	annotations := map[string]string{"podcap_stop_grace": "0s", "podcap_cooldown": "0s"}
	fp := fmt.Sprintf("b0%06x%08x", seq, time.Now().UnixNano()&0xffffffff) // distinct, 16 hex digits
	before, err := sessionDirs(b.podDir)
	if err != nil {
		s.Error = err.Error()
		return s
	}
	t0 := time.Now()
	s.Start = t0.Format(time.RFC3339Nano)
	if kind == "direct" {
		_, err = b.postHook(ctx, []testbed.WebhookAlert{firing(fp, labels, annotations)})
	} else {
		err = testbed.PostAlertmanagerAlerts(ctx, b.o.alertmanager, testbed.Alert{Labels: labels, Annotations: annotations})
	}
	s.PostMS = poll.Millis(t0, time.Now())
	if err != nil {
		s.Error = "post: " + err.Error()
		return s
	}
	s.FileMS, s.PacketMS, err = poll.FirstPacket(t0, b.o.poll, b.o.timeout, func() (bool, bool, error) {
		dirs, err := sessionDirs(b.podDir)
		if err != nil {
			return false, false, err
		}
		for _, d := range dirs {
			if slices.Contains(before, d) {
				continue
			}
			file := filepath.Join(b.podDir, d, "capture-"+b.o.pod+".pcapng0")
			if _, err := os.Stat(file); err != nil {
				return false, false, nil
			}
			return true, pcapngHasPacket(file), nil
		}
		return false, false, nil
	})
	if err != nil {
		s.Error = "first packet: " + err.Error()
	}
	if kind == "alertmanager" {
		if at, afp, err := b.notifiedAt(ctx, labels["bench_round"]); err != nil {
			s.Error = strings.TrimPrefix(s.Error+"; ", "; ") + "notified: " + err.Error()
		} else {
			fp = afp
			s.NotifyMS = poll.Millis(t0, at)
			if s.PacketMS >= 0 {
				s.AfterNotifyMS = s.PacketMS - s.NotifyMS
			}
		}
	}
	// resolve, the same way it fired, and wait until no alert capture runs
	t1 := time.Now()
	if kind == "direct" {
		r := firing(fp, labels, annotations)
		r.Status, r.EndsAt = alerts.StatusResolved, time.Now().UTC()
		_, err = b.postHook(ctx, []testbed.WebhookAlert{r})
	} else {
		err = testbed.PostAlertmanagerAlerts(ctx, b.o.alertmanager,
			testbed.Alert{Labels: labels, Annotations: annotations, EndsAt: time.Now().Add(-time.Second).UTC()})
	}
	if err != nil {
		s.Error = strings.TrimPrefix(s.Error+"; ", "; ") + "resolve: " + err.Error()
		return s
	}
	tStop, err := poll.Until(b.o.poll, b.o.timeout, func() (bool, error) { return b.running(ctx, 0) })
	if err != nil {
		s.Error = strings.TrimPrefix(s.Error+"; ", "; ") + "stop: " + err.Error()
		return s
	}
	s.StopMS = poll.Millis(t1, tStop)
	return s
}

// blastOnce posts b.o.blast distinct alerts that name no pod, batch per notification, conc at
// once, and measures how many a second the agent records.
func (b *bench) blastOnce(ctx context.Context, ci, batch, conc int) blastResult {
	r := blastResult{Kind: "blast", Batch: batch, Concurrency: conc, Alerts: b.o.blast}
	var notes [][]testbed.WebhookAlert
	for i := 0; i < b.o.blast; i += batch {
		var as []testbed.WebhookAlert
		for j := i; j < min(i+batch, b.o.blast); j++ {
			labels := map[string]string{"alertname": "PodcapBlast", "instance": fmt.Sprintf("host-%05d", j), "bench_run": b.runID,
				"blast": strconv.Itoa(ci)}
			as = append(as, firing(fmt.Sprintf("bb%02x%012x", ci, j), labels, map[string]string{"summary": "blast"}))
		}
		notes = append(notes, as)
	}
	r.Requests = len(notes)
	work := make(chan []testbed.WebhookAlert)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for as := range work {
				deadline := time.Now().Add(time.Minute)
				for {
					res, err := b.postHook(ctx, as)
					if err == nil {
						atomic.AddInt64(&r.Recorded, int64(res.Recorded))
						atomic.AddInt64(&r.Refused, int64(res.Refused))
						break
					}
					if errors.Is(err, errUnavailable) && time.Now().Before(deadline) {
						atomic.AddInt64(&r.Retries503, 1)
						time.Sleep(100 * time.Millisecond) // Alertmanager backs off ≥ 0.5 s; this is kinder to the count
						continue
					}
					firstErr.CompareAndSwap(nil, err.Error())
					break
				}
			}
		})
	}
	for _, as := range notes {
		work <- as
	}
	close(work)
	wg.Wait()
	r.Seconds = time.Since(start).Seconds()
	r.AlertsPerS = float64(r.Recorded) / r.Seconds
	if e, ok := firstErr.Load().(string); ok {
		r.Error = e
	}
	return r
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

// notifiedAt finds the CaptureAlert of this run's round and returns its status.lastNotifiedAt
// (the agent's clock when it recorded Alertmanager's notification) and fingerprint.
func (b *bench) notifiedAt(ctx context.Context, round string) (time.Time, string, error) {
	var at time.Time
	var fp string
	_, err := poll.Until(10*time.Millisecond, b.o.timeout, func() (bool, error) {
		l, err := b.objects.List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, o := range l.Items {
			if lv, _, _ := unstructured.NestedString(o.Object, "spec", "labels", "bench_round"); lv != round {
				continue
			}
			if lv, _, _ := unstructured.NestedString(o.Object, "spec", "labels", "bench_run"); lv != b.runID {
				continue
			}
			s, _, _ := unstructured.NestedString(o.Object, "status", "lastNotifiedAt")
			if at, err = time.Parse(time.RFC3339Nano, s); err != nil {
				return false, err
			}
			fp = o.GetName()
			return true, nil
		}
		return false, nil
	})
	return at, fp, err
}

// running reports whether exactly want alert captures run (the agent's metric).
func (b *bench) running(ctx context.Context, want float64) (bool, error) {
	v, err := scrape(ctx, b.o.metrics, `podcap_captures_running{source="alert"}`)
	return err == nil && v == want, err
}

func scrape(ctx context.Context, url, series string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s", series, url)
}

// sessionDirs lists the alert-* session directories of the pod.
func sessionDirs(podDir string) ([]string, error) {
	ents, err := os.ReadDir(podDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "alert-") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// pcapngHasPacket reports whether the pcapng file holds a complete packet block.
func pcapngHasPacket(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(bufio.NewReader(f), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		return false
	}
	_, _, err = r.ReadPacketData()
	return err == nil
}
