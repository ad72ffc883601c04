package testbed

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"
)

// WebhookMessage is the body Alertmanager's webhook integration sends (version "4").
type WebhookMessage struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"` // firing, resolved
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []WebhookAlert    `json:"alerts"`
}

// WebhookAlert is one alert of a WebhookMessage.
type WebhookAlert struct {
	Status       string            `json:"status"` // firing, resolved
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// NewWebhookMessage is the notification (version "4") Alertmanager's webhook integration
// sends for alerts of one group: firing if any of them fires, else resolved.
func NewWebhookMessage(receiver, groupKey string, groupLabels map[string]string, alerts []WebhookAlert) WebhookMessage {
	status := "resolved"
	for _, a := range alerts {
		if a.Status == "firing" {
			status = "firing"
		}
	}
	return WebhookMessage{Version: "4", GroupKey: groupKey, Status: status, Receiver: receiver, GroupLabels: groupLabels, Alerts: alerts}
}

// PostWebhook sends msg to a webhook receiver as Alertmanager does (JSON, the bearer token in
// the Authorization header) and returns the answer's status code and the first 4 KiB of its
// body, trimmed. An error only when there is no answer.
func PostWebhook(ctx context.Context, client *http.Client, url, token string, msg WebhookMessage) (int, []byte, error) {
	body, err := json.Marshal(msg)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, bytes.TrimSpace(b), nil
}

// WebhookNotification is one request a WebhookRecorder received.
type WebhookNotification struct {
	Received      time.Time
	Authorization string // the Authorization header, e.g. "Bearer <token>"
	Message       WebhookMessage
	Err           error // the body did not decode; Message is then empty
}

// WebhookRecorder is an HTTP server in the test process that records what Alertmanager's
// webhook integration sends it: a stand-in receiver for tests of the test bed, and a second
// receiver beside an agent.
type WebhookRecorder struct {
	URL string // http://127.0.0.1:PORT/

	srv *httptest.Server

	// mu protects the fields below.
	mu     sync.Mutex
	got    []WebhookNotification
	status int           // the answer to every request
	added  chan struct{} // closed and replaced on every request
}

// NewWebhookRecorder starts a WebhookRecorder that answers 200; the test's cleanup stops it.
func NewWebhookRecorder(t testing.TB) *WebhookRecorder {
	r := &WebhookRecorder{status: http.StatusOK, added: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL + "/"
	t.Cleanup(r.srv.Close)
	return r
}

// NewTLSWebhookRecorder is NewWebhookRecorder over HTTPS, with a self-signed certificate for
// 127.0.0.1 (Certificate).
func NewTLSWebhookRecorder(t testing.TB) *WebhookRecorder {
	r := &WebhookRecorder{status: http.StatusOK, added: make(chan struct{})}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL + "/"
	t.Cleanup(r.srv.Close)
	return r
}

// Certificate is the HTTPS recorder's certificate (nil over HTTP).
func (r *WebhookRecorder) Certificate() *x509.Certificate { return r.srv.Certificate() }

func (r *WebhookRecorder) serve(w http.ResponseWriter, req *http.Request) {
	n := WebhookNotification{Received: time.Now(), Authorization: req.Header.Get("Authorization")}
	body, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
	if err == nil {
		err = json.Unmarshal(body, &n.Message)
	}
	n.Err = err
	r.mu.Lock()
	r.got = append(r.got, n)
	status := r.status
	close(r.added)
	r.added = make(chan struct{})
	r.mu.Unlock()
	w.WriteHeader(status)
}

// SetStatus sets the HTTP status every later request is answered with. Debian's Alertmanager
// (0.25) retries a 5xx with backoff for group_interval, at least 10 s, makes one attempt on
// any 4xx (429
// included), and sends a failed notification again at the group's next flush
// (TestAlertmanagerWebhookStatusCodes).
func (r *WebhookRecorder) SetStatus(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = code
}

// Notifications returns what was received so far, in order.
func (r *WebhookRecorder) Notifications() []WebhookNotification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]WebhookNotification(nil), r.got...)
}

// Wait returns the first notification, received so far or later, for which match is true;
// an error if none comes before ctx ends or DefaultTimeout passes.
func (r *WebhookRecorder) Wait(ctx context.Context, what string, match func(WebhookNotification) bool) (WebhookNotification, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	seen := 0
	for {
		r.mu.Lock()
		got, added := r.got[seen:], r.added
		seen = len(r.got)
		r.mu.Unlock()
		for _, n := range got {
			if match(n) {
				return n, nil
			}
		}
		select {
		case <-added:
		case <-ctx.Done():
			return WebhookNotification{}, fmt.Errorf("no webhook notification %s among %d received: %w", what, seen, context.Cause(ctx))
		}
	}
}

// CertificatePEM returns the certificate the agent's API serves (PinnedCertificatePEM), for
// Alertmanager's tls_config.ca_file. Call it once the agent is ready.
func (a *AgentProcess) CertificatePEM(ctx context.Context) ([]byte, error) {
	return PinnedCertificatePEM(ctx, a.APIListenAddress, a.Log())
}

// WriteCertificatePEM writes CertificatePEM to path (Webhook.CAFile).
func (a *AgentProcess) WriteCertificatePEM(ctx context.Context, path string) error {
	b, err := a.CertificatePEM(ctx)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// PinnedCertificatePEM fetches the certificate served at addr (host:port) with a TLS
// handshake and returns it as PEM, but only if its SHA-256 fingerprint is the one agentLog
// logged for the self-signed certificate it made (as PinnedAPIClient pins it). A self-signed
// certificate is its own CA: Alertmanager's tls_config.ca_file accepts it as is, for the
// names and addresses the agent made it for (its node name, node IP, localhost, 127.0.0.1).
func PinnedCertificatePEM(ctx context.Context, addr, agentLog string) ([]byte, error) {
	client, err := PinnedAPIClient(agentLog)
	if err != nil {
		return nil, err
	}
	cfg := client.Transport.(*http.Transport).TLSClientConfig.Clone()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fetch the certificate of %s: %w", addr, err)
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("no server certificate")
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw}), nil
}
