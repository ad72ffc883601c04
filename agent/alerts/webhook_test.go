package alerts_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/klog/v2/ktesting"

	"github.com/podcap/podcap/agent/alerts"
	"github.com/podcap/podcap/agent/alerts/alertstest"
)

const (
	goodToken  = "0123456789abcdef0123456789abcdef"
	otherToken = "fedcba9876543210fedcba9876543210"
)

// clock is a fake clock that tests step.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// body is a valid notification of n firing alerts (and one resolved if resolved).
func body(t testing.TB, n int, resolved bool) string {
	t.Helper()
	type alert struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		StartsAt    string            `json:"startsAt"`
		EndsAt      string            `json:"endsAt"`
		Fingerprint string            `json:"fingerprint"`
	}
	var as []alert
	for i := range n {
		as = append(as, alert{"firing", map[string]string{"alertname": "A", "i": string(rune('a' + i))},
			"2026-12-06T05:27:49Z", "0001-01-01T00:00:00Z", "00000000000000" + string(rune('a'+i/16)) + string("0123456789abcdef"[i%16])})
	}
	if resolved {
		as = append(as, alert{"resolved", map[string]string{"alertname": "R"}, "2026-12-06T05:27:49Z", "2026-12-06T05:28:49Z", "ffffffffffffffff"})
	}
	b, err := json.Marshal(map[string]any{"version": "4", "receiver": "podcap", "status": "firing", "groupKey": "{}", "alerts": as})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t testing.TB, path, text string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type fixture struct {
	hook *alerts.Webhook
	rec  *alertstest.Recorder
	reg  *prometheus.Registry
	clk  *clock
}

func newFixture(t testing.TB, o alerts.WebhookOptions) *fixture {
	t.Helper()
	f := &fixture{rec: &alertstest.Recorder{}, reg: prometheus.NewRegistry(), clk: &clock{now: time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)}}
	if o.Recorder == nil {
		o.Recorder = f.rec
	}
	if o.TokenFile == "-" {
		o.TokenFile = writeFile(t, filepath.Join(t.TempDir(), "token"), goodToken+"\n")
	}
	o.Registerer, o.Now = f.reg, f.clk.Now
	hook, err := alerts.NewWebhook(o)
	if err != nil {
		t.Fatal(err)
	}
	f.hook = hook
	return f
}

// request is one request to the webhook.
type request struct {
	method, token, contentType, body string
	verified                         bool // the TLS state has a verified client chain
	bodyReader                       io.Reader
}

func (f *fixture) do(t testing.TB, rq request) *httptest.ResponseRecorder {
	t.Helper()
	if rq.method == "" {
		rq.method = http.MethodPost
	}
	var b io.Reader = strings.NewReader(rq.body)
	if rq.bodyReader != nil {
		b = rq.bodyReader
	}
	r := httptest.NewRequest(rq.method, alerts.WebhookPath, b)
	if rq.token != "" {
		r.Header.Set("Authorization", "Bearer "+rq.token)
	}
	if rq.contentType != "-" {
		r.Header.Set("Content-Type", cmpOr(rq.contentType, "application/json"))
	}
	if rq.verified {
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
	} else {
		r.TLS = &tls.ConnectionState{}
	}
	w := httptest.NewRecorder()
	f.hook.ServeHTTP(w, r)
	return w
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Every answer of the webhook, its code, its text and its count.
func TestWebhookAnswers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     alerts.WebhookOptions
		rec      *alertstest.Recorder
		rq       request
		code     int
		contains string
		recorded int // notifications the recorder got
	}{
		{"recorded", alerts.WebhookOptions{TokenFile: "-"}, nil, request{token: goodToken, body: body(t, 2, true)}, 200, `{"recorded":3,"refused":0}`, 1},
		{"refused by the store's bound", alerts.WebhookOptions{TokenFile: "-"}, &alertstest.Recorder{Result: &alerts.Recorded{Recorded: 1, Refused: 1}},
			request{token: goodToken, body: body(t, 2, false)}, 200, `{"recorded":1,"refused":1}`, 1},
		{"content type with parameters", alerts.WebhookOptions{TokenFile: "-"}, nil, request{token: goodToken, contentType: "application/json; charset=utf-8", body: body(t, 1, false)}, 200, "recorded", 1},
		{"no content type tolerated", alerts.WebhookOptions{TokenFile: "-"}, nil, request{token: goodToken, contentType: "-", body: body(t, 1, false)}, 200, "recorded", 1},
		{"malformed", alerts.WebhookOptions{TokenFile: "-"}, nil, request{token: goodToken, body: `{"version":"4",`}, 400, "invalid webhook payload: truncated JSON", 0},
		{"version 3", alerts.WebhookOptions{TokenFile: "-"}, nil, request{token: goodToken, body: strings.Replace(body(t, 1, false), `"version":"4"`, `"version":"3"`, 1)}, 400, `version "3", want "4"`, 0},
		{"oversize", alerts.WebhookOptions{TokenFile: "-", Limits: alerts.Limits{MaxBodyBytes: 100}}, nil, request{token: goodToken, body: body(t, 3, false)}, 413, "webhook body too large: over 100 bytes", 0},
		{"token missing", alerts.WebhookOptions{TokenFile: "-"}, nil, request{body: body(t, 1, false)}, 401, "bearer token missing", 0},
		{"token wrong", alerts.WebhookOptions{TokenFile: "-"}, nil, request{token: otherToken, body: body(t, 1, false)}, 401, "bearer token wrong", 0},
		{"token a prefix", alerts.WebhookOptions{TokenFile: "-"}, nil, request{token: goodToken[:20], body: body(t, 1, false)}, 401, "bearer token wrong", 0},
		{"certificate missing", alerts.WebhookOptions{RequireClientCert: true}, nil, request{body: body(t, 1, false)}, 403, "client certificate", 0},
		{"certificate verified", alerts.WebhookOptions{RequireClientCert: true}, nil, request{verified: true, body: body(t, 1, false)}, 200, "recorded", 1},
		{"certificate and token: token missing", alerts.WebhookOptions{RequireClientCert: true, TokenFile: "-"}, nil, request{verified: true, body: body(t, 1, false)}, 401, "bearer token missing", 0},
		{"certificate and token: certificate missing", alerts.WebhookOptions{RequireClientCert: true, TokenFile: "-"}, nil, request{token: goodToken, body: body(t, 1, false)}, 403, "client certificate", 0},
		{"certificate and token", alerts.WebhookOptions{RequireClientCert: true, TokenFile: "-"}, nil, request{verified: true, token: goodToken, body: body(t, 1, false)}, 200, "recorded", 1},
		{"GET", alerts.WebhookOptions{TokenFile: "-"}, nil, request{method: http.MethodGet, token: goodToken}, 405, "use POST", 0},
		{"form post", alerts.WebhookOptions{TokenFile: "-"}, nil, request{token: goodToken, contentType: "application/x-www-form-urlencoded", body: body(t, 1, false)}, 415, "application/json", 0},
		{"store down", alerts.WebhookOptions{TokenFile: "-"}, &alertstest.Recorder{Err: errors.New("apiserver: connection refused")},
			request{token: goodToken, body: body(t, 1, false)}, 503, "alerts not recorded, retry: apiserver: connection refused", 1},
		{"store too slow", alerts.WebhookOptions{TokenFile: "-", Timeout: 20 * time.Millisecond}, &alertstest.Recorder{Block: make(chan struct{})},
			request{token: goodToken, body: body(t, 1, false)}, 503, "not recorded within 20ms, retry", 0},
		{"off", alerts.WebhookOptions{}, nil, request{token: goodToken, body: body(t, 1, false)}, 404, "webhook is off on this agent: no authentication configured", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.rec != nil {
				tc.opts.Recorder = tc.rec
			}
			f := newFixture(t, tc.opts)
			w := f.do(t, tc.rq)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.contains) {
				t.Fatalf("answer %d %q, want %d with %q", w.Code, w.Body.String(), tc.code, tc.contains)
			}
			if got := len(f.rec.Got()) + lenGot(tc.rec); got != tc.recorded {
				t.Errorf("the recorder got %d notifications, want %d", got, tc.recorded)
			}
			if got := testutil.ToFloat64(f.hook.RequestsCounter(tc.code)); got != 1 {
				t.Errorf("podcap_webhook_requests_total{code=%d} = %v, want 1", tc.code, got)
			}
			wantAuth := map[int]string{401: `Bearer realm="podcap-webhook"`}[tc.code]
			if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, wantAuth) || (wantAuth == "") != (got == "") {
				t.Errorf("WWW-Authenticate %q, want %q", got, wantAuth)
			}
			if tc.code == 405 && w.Header().Get("Allow") != "POST" {
				t.Errorf("Allow %q", w.Header().Get("Allow"))
			}
			if n, err := testutil.GatherAndCount(f.reg, "podcap_webhook_request_duration_seconds"); err != nil || n != 1 {
				t.Errorf("duration histogram: %d series, %v", n, err)
			}
		})
	}
}

func lenGot(r *alertstest.Recorder) int {
	if r == nil {
		return 0
	}
	return len(r.Got())
}

// The metrics: every code and status pre-initialised, names linted, alerts counted per own
// status (a firing group with a resolved alert).
func TestWebhookMetrics(t *testing.T) {
	f := newFixture(t, alerts.WebhookOptions{TokenFile: "-"})
	for _, rq := range []request{
		{token: goodToken, body: body(t, 2, true)},
		{token: goodToken, body: body(t, 1, false)},
		{token: otherToken, body: body(t, 1, false)},
		{token: goodToken, body: "{"},
	} {
		f.do(t, rq)
	}
	want := `
# HELP podcap_alerts_received_total Alerts in the webhook notifications that decoded, by the alert's own status (a notification retried after a 503 counts again).
# TYPE podcap_alerts_received_total counter
podcap_alerts_received_total{status="firing"} 3
podcap_alerts_received_total{status="resolved"} 1
# HELP podcap_webhook_requests_total Alertmanager webhook requests, by the HTTP code answered (499: the client went away before the body was read).
# TYPE podcap_webhook_requests_total counter
podcap_webhook_requests_total{code="200"} 2
podcap_webhook_requests_total{code="400"} 1
podcap_webhook_requests_total{code="401"} 1
podcap_webhook_requests_total{code="403"} 0
podcap_webhook_requests_total{code="404"} 0
podcap_webhook_requests_total{code="405"} 0
podcap_webhook_requests_total{code="413"} 0
podcap_webhook_requests_total{code="415"} 0
podcap_webhook_requests_total{code="499"} 0
podcap_webhook_requests_total{code="503"} 0
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "podcap_webhook_requests_total", "podcap_alerts_received_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(f.reg, "podcap_webhook_request_duration_seconds"); err != nil || n != 1 {
		t.Errorf("duration histogram: %d series, %v", n, err)
	}
	if problems, err := testutil.GatherAndLint(f.reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
	// a second webhook on the same registry is an error, not a panic
	if _, err := alerts.NewWebhook(alerts.WebhookOptions{Recorder: f.rec, Registerer: f.reg}); err == nil {
		t.Error("metrics registered twice: no error")
	}
}

// Off without authentication, and when the token file holds no usable token; a token file that
// cannot be read is an error.
func TestWebhookOff(t *testing.T) {
	dir := t.TempDir()
	rec := &alertstest.Recorder{}
	for _, tc := range []struct{ name, file, off string }{
		{"no authentication", "", "no authentication configured"},
		{"token file missing", filepath.Join(dir, "missing"), "does not exist"},
		{"token file empty", writeFile(t, filepath.Join(dir, "empty"), "\n"), "0 bytes, shorter than the minimum of 16"},
		{"token short", writeFile(t, filepath.Join(dir, "short"), "0123456789abcde\n"), "15 bytes, shorter than the minimum of 16"},
		{"token 16 bytes", writeFile(t, filepath.Join(dir, "ok"), " 0123456789abcdef\n"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hook, err := alerts.NewWebhook(alerts.WebhookOptions{Recorder: rec, TokenFile: tc.file})
			if err != nil || !strings.Contains(hook.Off(), tc.off) || (tc.off == "") != (hook.Off() == "") {
				t.Fatalf("Off() = %q, %v; want %q", hook.Off(), err, tc.off)
			}
			if hook.RequiresToken() != (tc.off == "") {
				t.Errorf("RequiresToken %v", hook.RequiresToken())
			}
		})
	}
	if _, err := alerts.NewWebhook(alerts.WebhookOptions{Recorder: rec, TokenFile: dir}); err == nil {
		t.Error("a directory as the token file: no error")
	}
	if _, err := alerts.NewWebhook(alerts.WebhookOptions{TokenFile: filepath.Join(dir, "ok")}); err == nil {
		t.Error("no Recorder: no error")
	}
}

// The token rotates the way a Secret volume does (a new ..data directory, the symlink swapped):
// within the check interval the old token still works, after it only the new one does, without
// a restart. A rotation to an unusable token keeps the last good one.
func TestWebhookTokenRotation(t *testing.T) {
	dir := t.TempDir()
	rotate := func(gen, token string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, gen), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, gen, "token"), token)
		if err := os.Symlink(gen, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	rotate("gen1", goodToken)
	if err := os.Symlink("..data/token", filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, alerts.WebhookOptions{TokenFile: filepath.Join(dir, "token"), TokenCheckInterval: 5 * time.Second})
	code := func(token string) int { return f.do(t, request{token: token, body: body(t, 1, false)}).Code }
	if c := code(goodToken); c != 200 {
		t.Fatalf("first token: %d", c)
	}
	rotate("gen2", otherToken+"\n")
	if c := code(goodToken); c != 200 {
		t.Fatalf("old token before the check interval passed: %d, want 200 (read at most every 5s)", c)
	}
	f.clk.Step(5 * time.Second)
	if c, c2 := code(goodToken), code(otherToken); c != 401 || c2 != 200 {
		t.Fatalf("after rotation: old token %d, new token %d; want 401, 200", c, c2)
	}
	rotate("gen3", "short\n")
	f.clk.Step(5 * time.Second)
	if c, c2 := code(otherToken), code("short"); c != 200 || c2 != 401 {
		t.Fatalf("after rotating to a short token: last good %d, short %d; want 200, 401", c, c2)
	}
	rotate("gen4", goodToken)
	f.clk.Step(5 * time.Second)
	if c, c2 := code(goodToken), code(otherToken); c != 200 || c2 != 401 {
		t.Fatalf("after rotating back: %d, %d; want 200, 401", c, c2)
	}
}

// The body is read at most Limits.MaxBodyBytes+1 bytes, however long the sender's is.
func TestWebhookBoundedBody(t *testing.T) {
	f := newFixture(t, alerts.WebhookOptions{TokenFile: "-", Limits: alerts.Limits{MaxBodyBytes: 1000}})
	src := &endless{}
	if w := f.do(t, request{token: goodToken, bodyReader: src}); w.Code != 413 {
		t.Fatalf("endless body: %d %s", w.Code, w.Body)
	}
	if src.n > 1001 {
		t.Fatalf("read %d bytes of the body, want at most 1001", src.n)
	}
	// unauthenticated: nothing of the body read at all
	src = &endless{}
	if w := f.do(t, request{token: otherToken, bodyReader: src}); w.Code != 401 || src.n != 0 {
		t.Fatalf("unauthenticated endless body: %d, %d bytes read", w.Code, src.n)
	}
}

type endless struct{ n int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	e.n += len(p)
	return len(p), nil
}

// A body that cannot be read (the client went away) or a request whose client gave up is
// counted as 499, not as the sender's 400, and nothing is recorded.
func TestWebhookClientGone(t *testing.T) {
	f := newFixture(t, alerts.WebhookOptions{TokenFile: "-"})
	f.do(t, request{token: goodToken, bodyReader: io.MultiReader(strings.NewReader(`{"version":`), errReader{})})

	rec := &alertstest.Recorder{Block: make(chan struct{}), Entered: make(chan struct{}, 1)}
	g := newFixture(t, alerts.WebhookOptions{TokenFile: "-", Recorder: rec})
	ctx, cancel := context.WithCancel(t.Context())
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, alerts.WebhookPath, strings.NewReader(body(t, 1, false)))
	r.Header.Set("Authorization", "Bearer "+goodToken)
	done := make(chan struct{})
	go func() { defer close(done); g.hook.ServeHTTP(httptest.NewRecorder(), r) }()
	<-rec.Entered
	cancel()
	<-done
	for _, h := range []*alerts.Webhook{f.hook, g.hook} {
		if got, bad := testutil.ToFloat64(h.RequestsCounter(499)), testutil.ToFloat64(h.RequestsCounter(400)); got != 1 || bad != 0 {
			t.Errorf("499: %v, 400: %v; want 1, 0", got, bad)
		}
	}
	if len(f.rec.Got())+len(rec.Got()) != 0 {
		t.Error("recorded a notification of a client that went away")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// MaxInFlight notifications at once: one more waits for a slot up to Timeout, then gets 503
// (Alertmanager retries); the one in flight is not disturbed.
func TestWebhookInFlightBound(t *testing.T) {
	rec := &alertstest.Recorder{Block: make(chan struct{}), Entered: make(chan struct{}, 1), IgnoreContext: true}
	f := newFixture(t, alerts.WebhookOptions{TokenFile: "-", Recorder: rec, MaxInFlight: 1, Timeout: 30 * time.Millisecond})
	first := make(chan int)
	go func() { first <- f.do(t, request{token: goodToken, body: body(t, 1, false)}).Code }()
	<-rec.Entered
	if w := f.do(t, request{token: goodToken, body: body(t, 1, false)}); w.Code != 503 || !strings.Contains(w.Body.String(), "too many notifications in flight") {
		t.Errorf("second request with the slot taken: %d %q, want 503", w.Code, w.Body)
	}
	close(rec.Block)
	if c := <-first; c != 200 {
		t.Fatalf("first request: %d", c)
	}
	if c := f.do(t, request{token: goodToken, body: body(t, 1, false)}).Code; c != 200 {
		t.Fatalf("after the slot is free: %d", c)
	}
}

// Concurrent requests, good and bad, under -race: every one answered and counted once.
func TestWebhookConcurrent(t *testing.T) {
	f := newFixture(t, alerts.WebhookOptions{TokenFile: "-", MaxInFlight: 4})
	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			rq := request{token: goodToken, body: body(t, 1+i%5, i%2 == 0)}
			if i%4 == 3 {
				rq.token = otherToken
			}
			f.do(t, rq)
		})
	}
	wg.Wait()
	ok, unauth := testutil.ToFloat64(f.hook.RequestsCounter(200)), testutil.ToFloat64(f.hook.RequestsCounter(401))
	if ok != 48 || unauth != 16 || len(f.rec.Got()) != 48 {
		t.Fatalf("200: %v, 401: %v, recorded %d; want 48, 16, 48", ok, unauth, len(f.rec.Got()))
	}
}

// A storm of bad requests logs at most a few entries per window; the next window's first
// entry says how many were left out.
func TestWebhookLogRateLimited(t *testing.T) {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	logged := logger.GetSink().(ktesting.Underlier).GetBuffer().Data
	f := newFixture(t, alerts.WebhookOptions{TokenFile: "-", Logger: logger})
	for range 100 {
		f.do(t, request{token: otherToken, body: "x"})
	}
	if n := len(logged()); n != 5 {
		t.Fatalf("%d log entries for 100 refusals, want 5", n)
	}
	f.clk.Step(10 * time.Second)
	f.do(t, request{body: "x"})
	entries := logged()
	if len(entries) != 6 || !strings.Contains(fmt.Sprintln(entries[5].ParameterKVList...), "leftOutSinceLast 95") {
		t.Fatalf("entries %+v, want a sixth that counts the 95 left out", entries)
	}
	if kv := fmt.Sprintln(entries[0].ParameterKVList...); !strings.Contains(kv, "code 401") || strings.Contains(kv, otherToken) {
		t.Errorf("entry %q: want the code and never the token", kv)
	}
}

// The optional token Secret created after the agent started: the webhook answers 404 while the
// file is missing or holds too short a token, and turns on by itself (no restart) within one
// check interval of the file holding a usable token.
func TestWebhookTokenAppearsLater(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	f := newFixture(t, alerts.WebhookOptions{TokenFile: path, TokenCheckInterval: 5 * time.Second})
	code := func() int { return f.do(t, request{token: goodToken, body: body(t, 1, false)}).Code }
	if off := f.hook.Off(); !strings.Contains(off, "does not exist") || !strings.Contains(off, "turns on when") {
		t.Fatalf("Off() = %q", off)
	}
	if c := code(); c != 404 {
		t.Fatalf("no token file: %d, want 404", c)
	}
	writeFile(t, path, "short\n")
	f.clk.Step(5 * time.Second)
	if c := code(); c != 404 || !strings.Contains(f.hook.Off(), "shorter than the minimum") {
		t.Fatalf("short token: %d, Off() %q; want 404, too short", c, f.hook.Off())
	}
	writeFile(t, path, goodToken+"\n")
	if c := code(); c != 404 {
		t.Fatalf("usable token before the check interval passed: %d, want 404 (read at most every 5s)", c)
	}
	f.clk.Step(5 * time.Second)
	if c := code(); c != 200 || f.hook.Off() != "" || !f.hook.RequiresToken() {
		t.Fatalf("usable token: %d, Off() %q; want 200 and on", c, f.hook.Off())
	}
	if c := f.do(t, request{token: otherToken, body: body(t, 1, false)}).Code; c != 401 {
		t.Fatalf("wrong token once on: %d, want 401", c)
	}
	if n := len(f.rec.Got()); n != 1 {
		t.Fatalf("recorded %d notifications, want 1 (only the one after the token appeared)", n)
	}
}
