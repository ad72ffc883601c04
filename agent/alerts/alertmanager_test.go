package alerts_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podcap/podcap/agent/alerts"
)

// alertmanagerBin is Debian's Alertmanager (prometheus-alertmanager 0.25).
const alertmanagerBin = "/usr/bin/prometheus-alertmanager"

// TestRealAlertmanager proves, against the real Alertmanager, what it does with each of the
// webhook's answers (the table in Webhook's doc): a 2xx is delivered; a 4xx is given up after
// one attempt (alertmanager_notifications_failed_total +1 with one request, our text in its
// log) and sent again only at the next group_interval; a 5xx is retried in the same flush.
// "No retry" is read from Alertmanager's own counters once it gave the notification up, not
// from a sleep.
func TestRealAlertmanager(t *testing.T) {
	if _, err := os.Stat(alertmanagerBin); err != nil {
		t.Fatalf("this test needs the real Alertmanager (apt-get install -y prometheus-alertmanager): %v", err)
	}
	p := newPKI(t)
	fourxx := func(code int, text string) func(t *testing.T, s *amScenario) {
		return func(t *testing.T, s *amScenario) {
			s.am.push(t, "A1")
			s.am.waitMetric(t, "alertmanager_notifications_failed_total", 1)
			if n := s.am.metric(t, "alertmanager_notification_requests_total"); n != 1 {
				t.Errorf("Alertmanager made %v requests for the notification it gave up, want 1 (no retry)", n)
			}
			if got := s.codes(); len(got) != 1 || got[0] != code {
				t.Errorf("the webhook answered %v, want one %d", got, code)
			}
			s.am.waitLog(t, "notify retry canceled due to unrecoverable error after 1 attempts", fmt.Sprintf("unexpected status code %d", code), text)
			if len(s.rec.got()) != 0 {
				t.Error("alerts recorded")
			}
		}
	}
	for _, tc := range []amScenario{
		{name: "200 delivered", hook: alerts.WebhookOptions{TokenFile: "-"}, run: func(t *testing.T, s *amScenario) {
			s.am.push(t, "A1")
			s.am.waitDelivered(t)
			got := s.rec.got()
			if len(got) != 1 || got[0].Alerts[0].Labels["pod"] != "cart-7d9" || got[0].Alerts[0].Status != alerts.StatusFiring {
				t.Fatalf("recorded %+v", got)
			}
			if c := s.codes(); len(c) != 1 || c[0] != 200 || s.am.metric(t, "alertmanager_notifications_failed_total") != 0 {
				t.Fatalf("answers %v", c)
			}
		}},
		{name: "401 wrong token not retried", hook: alerts.WebhookOptions{TokenFile: "-"}, amToken: otherToken, run: fourxx(401, "bearer token wrong")},
		{name: "400 not retried", hook: alerts.WebhookOptions{TokenFile: "-", Limits: alerts.Limits{MaxLabels: 2}}, run: fourxx(400, "labels: 3 entries, at most 2")},
		{name: "413 not retried", hook: alerts.WebhookOptions{TokenFile: "-", Limits: alerts.Limits{MaxBodyBytes: 200}}, run: fourxx(413, "over 200 bytes")},
		{name: "404 off not retried", hook: alerts.WebhookOptions{}, run: fourxx(404, "webhook is off")},
		{name: "403 without client certificate", hook: alerts.WebhookOptions{RequireClientCert: true}, run: fourxx(403, "client certificate")},
		{name: "mTLS and token delivered", hook: alerts.WebhookOptions{RequireClientCert: true, TokenFile: "-"}, amClientCert: true, run: func(t *testing.T, s *amScenario) {
			s.am.push(t, "A1")
			s.am.waitDelivered(t)
			if c := s.codes(); len(c) != 1 || c[0] != 200 || len(s.rec.got()) != 1 {
				t.Fatalf("answers %v, recorded %d", c, len(s.rec.got()))
			}
		}},
		{name: "client certificate of another CA: handshake refused, retried", hook: alerts.WebhookOptions{RequireClientCert: true},
			amClientCert: true, foreignCert: true, run: func(t *testing.T, s *amScenario) {
				s.am.push(t, "A1")
				eventually(t, 30*time.Second, "a retry after the refused handshake", func() bool {
					return s.am.metric(t, "alertmanager_notification_requests_failed_total") >= 2
				})
				if n := s.am.metric(t, "alertmanager_notifications_failed_total"); n != 0 || len(s.codes()) != 0 {
					t.Errorf("Alertmanager gave up (%v) or the handler was reached (%v), want retries and no request", n, s.codes())
				}
				s.am.waitLog(t, "Notify attempt failed, will retry later", "remote error: tls: unknown certificate authority")
			}},
		{name: "503 retried until recorded", hook: alerts.WebhookOptions{TokenFile: "-"}, run: func(t *testing.T, s *amScenario) {
			s.rec.fail.Store(true)
			s.am.push(t, "A1")
			s.waitCodes(t, "a retry after a 503", func(c []int) bool { return len(c) >= 2 })
			if n := s.am.metric(t, "alertmanager_notifications_failed_total"); n != 0 {
				t.Errorf("Alertmanager gave up after a 503 (%v), want it to retry", n)
			}
			s.am.waitLog(t, "Notify attempt failed, will retry later", "unexpected status code 503", "alerts not recorded, retry")
			s.rec.fail.Store(false)
			s.am.waitDelivered(t)
			c := s.codes()
			if c[len(c)-1] != 200 || len(s.rec.got()) != 1 || s.am.metric(t, "alertmanager_notifications_failed_total") != 0 ||
				s.am.metric(t, "alertmanager_notifications_total") != 1 {
				t.Fatalf("answers %v, recorded %d: want 503s, then 200 in the same flush", c, len(s.rec.got()))
			}
			s.am.waitLog(t, "Notify success", fmt.Sprintf("attempts=%d", len(c)))
		}},
		{name: "401 sent again at the next group_interval", hook: alerts.WebhookOptions{TokenFile: "-", TokenCheckInterval: time.Millisecond},
			amToken: otherToken, groupInterval: "2s", run: func(t *testing.T, s *amScenario) {
				s.am.push(t, "A1")
				s.am.waitMetric(t, "alertmanager_notifications_failed_total", 1)
				// our side rotates to the token Alertmanager sends: the next flush delivers
				writeFile(t, s.tokenFile, otherToken)
				s.waitCodes(t, "the group sent again", func(c []int) bool { return len(c) >= 2 && c[len(c)-1] == 200 })
				if c := s.codes(); c[0] != 401 || len(s.rec.got()) != 1 {
					t.Fatalf("answers %v, recorded %d", c, len(s.rec.got()))
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc
			s.start(t, p)
			s.run(t, &s)
		})
	}
}

// amScenario is one webhook behind an httptest TLS server and one Alertmanager pointed at it.
type amScenario struct {
	name          string
	hook          alerts.WebhookOptions
	amToken       string // the token Alertmanager sends; default goodToken
	amClientCert  bool   // Alertmanager presents a client certificate of the CA
	foreignCert   bool   // … of another CA
	groupInterval string // default 1m: no second flush within a test
	run           func(t *testing.T, s *amScenario)

	rec       *switchRecorder
	tokenFile string
	am        *alertmanager
	mu        *sync.Mutex // protects answers
	answers   []int
}

func (s *amScenario) start(t *testing.T, p *pki) {
	dir := t.TempDir()
	s.rec, s.mu = &switchRecorder{}, &sync.Mutex{}
	s.hook.Recorder = s.rec
	if s.hook.TokenFile == "-" {
		s.tokenFile = writeFile(t, filepath.Join(dir, "webhook-token"), goodToken+"\n")
		s.hook.TokenFile = s.tokenFile
	}
	hook, err := alerts.NewWebhook(s.hook)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &codeWriter{ResponseWriter: w, code: 200}
		hook.ServeHTTP(cw, r)
		s.mu.Lock()
		s.answers = append(s.answers, cw.code)
		s.mu.Unlock()
	}))
	// as agent.APITransport with ClientCAs does it
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool, ClientAuth: tls.VerifyClientCertIfGiven}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	amToken := goodToken
	if s.amToken != "" {
		amToken = s.amToken
	}
	httpConfig := fmt.Sprintf(`
    http_config:
      authorization:
        credentials_file: %s
      tls_config:
        ca_file: %s`, writeFile(t, filepath.Join(dir, "am-token"), amToken), p.caFile)
	if s.amClientCert {
		if s.foreignCert {
			p = newPKI(t)
		}
		httpConfig += fmt.Sprintf(`
        cert_file: %s
        key_file: %s`, p.clientCertFile, p.clientKeyFile)
	}
	gi := s.groupInterval
	if gi == "" {
		gi = "1m"
	}
	config := fmt.Sprintf(`route:
  receiver: podcap
  group_by: [alertname]
  group_wait: 0s
  group_interval: %s
  repeat_interval: 1h
receivers:
- name: podcap
  webhook_configs:
  - url: %s%s
    send_resolved: true
    max_alerts: %d%s
`, gi, srv.URL, alerts.WebhookPath, alerts.DefaultMaxAlerts, httpConfig)
	s.am = startAlertmanager(t, config)
}

func (s *amScenario) codes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.answers...)
}

func (s *amScenario) waitCodes(t *testing.T, what string, ok func([]int) bool) {
	t.Helper()
	eventually(t, 30*time.Second, what, func() bool { return ok(s.codes()) })
}

type codeWriter struct {
	http.ResponseWriter
	code int
}

func (w *codeWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }

// switchRecorder records, or fails (transiently) while fail is set.
type switchRecorder struct {
	fail atomic.Bool
	mu   sync.Mutex
	ns   []alerts.Notification
}

func (r *switchRecorder) Record(_ context.Context, n alerts.Notification) (alerts.Recorded, error) {
	if r.fail.Load() {
		return alerts.Recorded{}, errors.New("the API server did not answer")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ns = append(r.ns, n)
	return alerts.Recorded{Recorded: len(n.Alerts)}, nil
}

func (r *switchRecorder) got() []alerts.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]alerts.Notification(nil), r.ns...)
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// alertmanager is a running Alertmanager on a private port, clustering off.
type alertmanager struct {
	url string
	log *syncBuffer
}

func startAlertmanager(t *testing.T, config string) *alertmanager {
	t.Helper()
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "alertmanager.yml"), config)
	addr := freeAddr(t)
	am := &alertmanager{url: "http://" + addr, log: &syncBuffer{}}
	cmd := exec.Command(alertmanagerBin, "--config.file="+cfg, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=debug")
	cmd.Stdout, cmd.Stderr = am.log, am.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("Alertmanager's log:\n%s", am.log.String())
		}
	})
	eventually(t, 30*time.Second, "Alertmanager ready", func() bool {
		resp, err := http.Get(am.url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return am
}

// push posts one firing alert through Alertmanager's API v2.
func (am *alertmanager) push(t *testing.T, name string) {
	t.Helper()
	b, _ := json.Marshal([]map[string]any{{
		"labels":      map[string]string{"alertname": name, "namespace": "shop", "pod": "cart-7d9"},
		"annotations": map[string]string{"summary": "retransmits high"},
		"startsAt":    time.Now().UTC().Format(time.RFC3339Nano),
	}})
	resp, err := http.Post(am.url+"/api/v2/alerts", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push alert: %s", resp.Status)
	}
}

// metric is the value of Alertmanager's counter name{integration="webhook"}.
func (am *alertmanager) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get(am.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	prefix := name + `{integration="webhook"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in Alertmanager's metrics", prefix)
	return 0
}

func (am *alertmanager) waitMetric(t *testing.T, name string, want float64) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%s = %v", name, want), func() bool { return am.metric(t, name) >= want })
	if got := am.metric(t, name); got != want {
		t.Fatalf("%s = %v, want %v", name, got, want)
	}
}

// waitDelivered waits until one webhook request succeeded (Alertmanager counts every attempt
// in notification_requests_total and the failed ones in notification_requests_failed_total).
func (am *alertmanager) waitDelivered(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, "a delivered notification", func() bool {
		return am.metric(t, "alertmanager_notification_requests_total")-am.metric(t, "alertmanager_notification_requests_failed_total") >= 1
	})
}

// waitLog waits for a line of Alertmanager's log holding every part.
func (am *alertmanager) waitLog(t *testing.T, parts ...string) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("a log line with %q", parts), func() bool {
	lines:
		for line := range strings.SplitSeq(am.log.String(), "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			return true
		}
		return false
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// freeAddr is a loopback address with a port free now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// pki is a CA, a server certificate for 127.0.0.1 and a client certificate, made by the test.
type pki struct {
	pool                                  *x509.CertPool
	server                                tls.Certificate
	caFile, clientCertFile, clientKeyFile string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey, caCert := newCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "podcap test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	p := &pki{pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	p.caFile = writeFile(t, filepath.Join(dir, "ca.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})))
	srvKey, srvCert := newCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "podcap-webhook"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, caCert, caKey)
	p.server = tls.Certificate{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey}
	cliKey, cliCert := newCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "alertmanager"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, caCert, caKey)
	keyDER, err := x509.MarshalPKCS8PrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	p.clientCertFile = writeFile(t, filepath.Join(dir, "client.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cliCert.Raw})))
	p.clientKeyFile = writeFile(t, filepath.Join(dir, "client.key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	return p
}

// newCert makes a key and a certificate of tmpl signed by parent (self-signed if nil).
func newCert(t *testing.T, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}
