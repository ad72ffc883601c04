package testbed

import (
	"bytes"
	"crypto/tls"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/klog/v2/textlogger"

	"github.com/podcap/podcap/agent"
)

// PinnedAPIClient reads the fingerprint from the agent's own log line (klog's text format, as
// `kubectl logs` shows it) and trusts that certificate only.
func TestPinnedAPIClient(t *testing.T) {
	var log bytes.Buffer
	ss, err := agent.NewSelfSigned(agent.SelfSignedOptions{Hosts: []string{"localhost", "127.0.0.1"},
		Logger: textlogger.NewLogger(textlogger.NewConfig(textlogger.Output(&log))).WithName("tls")})
	if err != nil {
		t.Fatal(err)
	}
	other, err := agent.NewSelfSigned(agent.SelfSignedOptions{Hosts: []string{"localhost", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := PinnedAPIClient("I1206 starting\n" + log.String() + "I1206 serving\n")
	if err != nil {
		t.Fatalf("%v in %q", err, log.String())
	}
	for name, tc := range map[string]struct {
		getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
		ok             bool
	}{"the logged certificate": {ss.GetCertificate, true}, "another certificate": {other.GetCertificate, false}} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			cert, err := tc.getCertificate(&tls.ClientHelloInfo{})
			if err != nil {
				t.Fatal(err)
			}
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}} // StartTLS would replace an empty list
			srv.Config.ErrorLog = stdlog.New(io.Discard, "", 0)           // the refused handshake
			srv.StartTLS()
			defer srv.Close()
			resp, err := client.Get(srv.URL)
			if err == nil {
				resp.Body.Close()
			}
			if (err == nil) != tc.ok || !tc.ok && !strings.Contains(err.Error(), "want the logged") {
				t.Fatalf("GET: %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := PinnedAPIClient("I1206 no certificate here\n"); err == nil {
		t.Fatal("a log without the certificate: no error")
	}
}
