package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/podcap/podcap/agent/alerts"
	"github.com/podcap/podcap/test/testbed"
)

// alertRule fires TestFault while the metric pod's test_fault is above 0; the alert carries
// the target's namespace and pod labels (rules/alerts.rego captures that pod) and asks, by
// annotation, for a short stop grace and a cooldown the test can see hold.
const alertRule = `groups:
- name: podcap-e2e
  rules:
  - alert: TestFault
    expr: test_fault > 0
    for: 0s
    annotations:
      podcap_stop_grace: 5s
      podcap_cooldown: 10m
`

// TestAlertCaptureEndToEnd: a Prometheus alerting rule on a metric a pod serves fires, the real
// Alertmanager (group_wait 0, bearer token, the agent's certificate as its CA) posts it to the
// agent's webhook, the agent records a CaptureAlert and rules/alerts.rego captures the pod into
// pcapng files whose section header names the alert. Repeated notifications keep one capture
// and one object; an agent restarted while the alert fires captures again from the objects
// alone; the resolve stops the capture after its stop grace with the files kept; the alert
// firing again inside the cooldown starts nothing. A request with a wrong or no token is 401,
// counted, and records nothing.
func TestAlertCaptureEndToEnd(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	objects := alertObjects(t, c)

	mp := c.StartMetricPod(t, "alert-e2e", "cart", testbed.MetricPodOptions{Metrics: map[string]float64{"test_fault": 0}})
	pod := mp.Pod

	// one certificate, address and capture directory for both lives of the agent, so that
	// Alertmanager's configuration holds across the restart and its files stay in one place
	w := newWebhookAgent(t, c)
	token, certFile, apiAddr, agentArgs := w.token, w.certFile, w.apiAddr, w.args
	a := startAgent(t, c, agentArgs...)

	am := c.StartAlertmanager(t, testbed.AlertmanagerOptions{
		Webhooks: []testbed.Webhook{{URL: "https://" + apiAddr + alerts.WebhookPath, BearerToken: token, CAFile: certFile}},
		// a notification every 2 s while the alert fires: repeats must not make a second capture
		RepeatInterval: 2 * time.Second,
	})
	prom := c.StartPrometheus(t, testbed.PrometheusOptions{
		Targets: []testbed.ScrapeTarget{mp.ScrapeTarget()}, Rules: alertRule, AlertmanagerURL: am.URL(),
	})
	waitFor(t, time.Minute, "Prometheus to scrape the pod", func() (bool, error) {
		s, err := prom.Query(ctx, `test_fault{namespace="alert-e2e", pod="cart"}`)
		return len(s) == 1, err
	})

	// fire
	if err := mp.SetMetric(ctx, "test_fault", 1); err != nil {
		t.Fatal(err)
	}
	fp := waitCaptureAlert(t, objects, "cart", "firing")
	dir := alertSession(t, a, pod, 0)
	first := filepath.Join(dir, "capture-cart.pcapng0")
	// Prometheus scrapes the pod every second: its traffic is in the capture
	waitFor(t, 30*time.Second, "packets of "+pod.Status.PodIP+" in "+first, func() (bool, error) {
		return pcapngPackets(t, first) > 0, nil
	})
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "TestFault")

	// repeated notifications: one object, one capture
	waitFor(t, time.Minute, "three notifications from Alertmanager", func() (bool, error) {
		n, err := am.Metric(ctx, "alertmanager_notifications_total", map[string]string{"integration": "webhook"})
		return n >= 3, err
	})
	if n := len(listAlerts(t, objects)); n != 1 {
		t.Errorf("%d CaptureAlert objects after repeated notifications, want 1", n)
	}
	if s := sessions(t, a, pod, "alert-*"); len(s) != 1 {
		t.Errorf("capture sessions after repeated notifications: %v, want one", s)
	}

	// bad credentials: 401, counted, nothing recorded
	for _, auth := range []string{"", "Bearer wrong-token-0123456789"} {
		if code := postAlert(t, apiAddr, certFile, auth, "ffffffffffffffff"); code != http.StatusUnauthorized {
			t.Errorf("webhook with Authorization %q: %d, want 401", auth, code)
		}
	}
	if v := metric(t, a, `podcap_webhook_requests_total{code="401"}`); v != 2 {
		t.Errorf("podcap_webhook_requests_total{code=401} = %v, want 2", v)
	}
	// every family has series now (captures, webhook, alert store, policy): lint them
	lintMetrics(t, a)
	if n := len(listAlerts(t, objects)); n != 1 {
		t.Errorf("%d CaptureAlert objects after refused requests, want 1", n)
	}

	// restart while the alert fires: the new agent learns it from the object and captures again
	if err := a.Stop(); err != nil {
		t.Fatalf("stop agent: %v", err)
	}
	a = startAgent(t, c, agentArgs...)
	dir = alertSession(t, a, pod, 1)
	second := filepath.Join(dir, "capture-cart.pcapng0")
	waitFor(t, 30*time.Second, "packets in the restarted agent's capture", func() (bool, error) {
		return pcapngPackets(t, second) > 0, nil
	})
	head, err := os.ReadFile(second)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TestFault", fp, "pod alert-e2e/cart", "node " + c.NodeName} {
		if !bytes.Contains(head, []byte(want)) {
			t.Errorf("the pcapng section header of %s does not name %q", second, want)
		}
	}

	// resolve: the capture goes on for its stop grace, then stops; the files stay
	if err := mp.SetMetric(ctx, "test_fault", 0); err != nil {
		t.Fatal(err)
	}
	waitCaptureAlert(t, objects, "cart", "resolved")
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStopping", "")
	waitFor(t, time.Minute, "the alert capture to stop after its grace", func() (bool, error) {
		return len(sessionProcs(t, a, "tcpdump")) == 0, nil
	})
	if pcapngPackets(t, second) == 0 {
		t.Fatal("the alert capture's files were not kept")
	}

	// the alert fires again inside the cooldown: no new capture
	if err := mp.SetMetric(ctx, "test_fault", 1); err != nil {
		t.Fatal(err)
	}
	waitCaptureAlert(t, objects, "cart", "firing")
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureCoolingDown", "")
	if s := sessions(t, a, pod, "alert-*"); len(s) != 2 {
		t.Errorf("capture sessions during the cooldown: %v, want the two before (one of each life of the agent)", s)
	}
	if n := len(sessionProcs(t, a, "tcpdump")); n != 0 {
		t.Errorf("%d tcpdump processes during the cooldown, want 0", n)
	}
}

// webhookAgent is how to start an agent with the Alertmanager webhook on, the same across its
// restarts: one serving certificate (for 127.0.0.1), API address, webhook token, policy
// directory (the shipped rules) and capture directory.
type webhookAgent struct {
	args                               []string
	token, certFile, apiAddr, policies string
}

func newWebhookAgent(t *testing.T, c *testbed.Cluster) webhookAgent {
	t.Helper()
	scratch := t.TempDir()
	certFile, keyFile := writeServingCert(t, scratch)
	w := webhookAgent{token: "webhook-token-" + strings.Repeat("0123456789", 2), certFile: certFile,
		apiAddr: "127.0.0.1:" + freeTCPPort(t), policies: policyDir(t, c, nil)}
	tokenFile := filepath.Join(scratch, "webhook-token")
	writeFile(t, tokenFile, w.token+"\n")
	w.args = []string{"--capture-dir=" + filepath.Join(scratch, "captures"), "--policy-dir=" + w.policies,
		"--policy-poll-interval=100ms", "--policy-eval-timeout=10s", "--api-listen-address=" + w.apiAddr,
		"--tls-cert-file=" + certFile, "--tls-private-key-file=" + keyFile, "--webhook-token-file=" + tokenFile}
	return w
}

// alertSession waits for the pod's alert capture number n (0: the first in the pod's
// directory) to run and returns its directory.
func alertSession(t *testing.T, a *testbed.AgentProcess, pod *corev1.Pod, n int) string {
	t.Helper()
	var dir string
	waitFor(t, 30*time.Second, "a running alert capture of "+pod.Name, func() (bool, error) {
		m := sessions(t, a, pod, "alert-*")
		if len(m) <= n {
			return false, nil
		}
		dir = m[n]
		ring, err := filepath.Glob(filepath.Join(dir, "capture-*.pcapng*"))
		return len(ring) > 0 && fileSize(ring[0]) > 0, err
	})
	return dir
}

// sessions lists the pod's capture directories matching pattern, oldest first (their names
// end in the start time).
func sessions(t *testing.T, a *testbed.AgentProcess, pod *corev1.Pod, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(podDir(a, pod), pattern))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// pcapngPackets counts the packets of a pcapng file; 0 while it holds none or is incomplete.
func pcapngPackets(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		return 0
	}
	n := 0
	for {
		if _, _, err := r.ReadPacketData(); err != nil {
			return n
		}
		n++
	}
}

// waitCaptureAlert waits for a CaptureAlert of the metric pod with the status and returns its
// fingerprint.
func waitCaptureAlert(t *testing.T, objects capturealerts, pod, status string) string {
	t.Helper()
	var fp string
	waitFor(t, time.Minute, "a "+status+" CaptureAlert for pod "+pod, func() (bool, error) {
		for _, o := range listAlerts(t, objects) {
			p, _, _ := unstructured.NestedString(o.Object, "spec", "labels", "pod")
			s, _, _ := unstructured.NestedString(o.Object, "spec", "status")
			if p == pod && s == status {
				fp = o.GetName()
				return true, nil
			}
		}
		return false, nil
	})
	return fp
}

// capturealerts is the dynamic client of the CaptureAlert objects of one namespace.
type capturealerts interface {
	List(ctx context.Context, opts metav1.ListOptions) (*unstructured.UnstructuredList, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions, subresources ...string) error
}

func listAlerts(t *testing.T, objects capturealerts) []unstructured.Unstructured {
	t.Helper()
	l, err := objects.List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list capturealerts: %v", err)
	}
	return l.Items
}

// postAlert posts a one-alert notification to the webhook with the Authorization header auth
// ("" for none) and returns the status code.
func postAlert(t *testing.T, addr, caFile, auth, fingerprint string) int {
	t.Helper()
	return postAlertFor(t, addr, caFile, auth, fingerprint, "alert-e2e", "cart", "firing")
}

// postAlertFor posts a one-alert notification of an alert with the status (firing, resolved)
// on pod namespace/pod.
func postAlertFor(t *testing.T, addr, caFile, auth, fingerprint, namespace, pod, status string) int {
	t.Helper()
	client, err := caClient(caFile)
	if err != nil {
		t.Fatal(err)
	}
	endsAt := "0001-01-01T00:00:00Z"
	if status == "resolved" {
		endsAt = time.Now().UTC().Format(time.RFC3339)
	}
	body := fmt.Sprintf(`{"version":"4","status":%q,"receiver":"r","groupKey":"{}:{}","alerts":[{"status":%q,`+
		`"labels":{"alertname":"Intruder","namespace":%q,"pod":%q},"annotations":{},`+
		`"startsAt":"2026-01-01T00:00:00Z","endsAt":%q,"fingerprint":%q}]}`, status, status, namespace, pod, endsAt, fingerprint)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://"+addr+alerts.WebhookPath, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("post to the webhook: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// writeServingCert writes a self-signed certificate for 127.0.0.1 and its key (PEM) and
// returns their paths.
func writeServingCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "podcap-e2e"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
}

// caClient is an HTTPS client that trusts only the certificates of caFile.
func caClient(caFile string) (*http.Client, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("no certificate in " + caFile)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

// freeTCPPort is a port of 127.0.0.1 free a moment ago.
func freeTCPPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}
