package agent

import (
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
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "podcap test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a server certificate for 127.0.0.1 with the given serial number and its key,
// both PEM.
func (ca *testCA) issue(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "podcap-agent"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// secretVolume lays files out as the kubelet does in a Secret volume: the files live in a
// timestamped directory, `..data` links to it, and each name links to `..data/<name>`. An
// update writes a new directory and renames a new `..data` link over the old one (one atomic
// switch of every file), then removes the old directory.
type secretVolume struct {
	dir  string
	n    int
	data string // the current timestamped directory
}

func newSecretVolume(t *testing.T, certPEM, keyPEM []byte) *secretVolume {
	t.Helper()
	v := &secretVolume{dir: t.TempDir()}
	v.update(t, certPEM, keyPEM)
	for _, name := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *secretVolume) certFile() string { return filepath.Join(v.dir, "tls.crt") }
func (v *secretVolume) keyFile() string  { return filepath.Join(v.dir, "tls.key") }

func (v *secretVolume) update(t *testing.T, certPEM, keyPEM []byte) {
	t.Helper()
	v.n++
	data := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", v.n, v.n)
	if err := os.Mkdir(filepath.Join(v.dir, data), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(v.dir, data, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(data, filepath.Join(v.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(v.dir, "..data_tmp"), filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if v.data != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, v.data)); err != nil {
			t.Fatal(err)
		}
	}
	v.data = data
}

// bufferedLogger logs to the test and keeps the entries for the test to read.
func bufferedLogger(t *testing.T) (klog.Logger, func() ktesting.Log) {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	buf := logger.GetSink().(ktesting.Underlier).GetBuffer()
	return logger, buf.Data
}

func errorEntries(log ktesting.Log) []ktesting.LogEntry {
	var errs []ktesting.LogEntry
	for _, e := range log {
		if e.Type == ktesting.LogError {
			errs = append(errs, e)
		}
	}
	return errs
}

// eventually polls cond until it holds, for at most 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond) // the poll's period, not a synchronisation
	}
}

// serveLocal serves srv on 127.0.0.1 and returns its address; it stops when the test ends.
func serveLocal(t *testing.T, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// tlsAPIServer is an API server over TLS with the certificates of getCertificate and one
// route, GET /api/v1/ok.
func tlsAPIServer(t *testing.T, getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *Server {
	t.Helper()
	srv, err := NewAPIServer("127.0.0.1:0", APITransport{GetCertificate: getCertificate})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle("GET /api/v1/ok", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }))
	return srv
}

// servedSerial makes a new TLS connection to addr and returns the serial number of the
// certificate it verified with pool.
func servedSerial(t *testing.T, addr string, pool *x509.CertPool) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// The API server serves over TLS 1.2 or later with the mounted key pair, refuses plain
// HTTP, follows a rotation of the Secret volume, and keeps the last good pair when a
// rotation brings a broken one.
func TestServerTLS(t *testing.T) {
	ca := newTestCA(t)
	cert1, key1 := ca.issue(t, 1)
	vol := newSecretVolume(t, cert1, key1)
	logger, logged := bufferedLogger(t)
	kp, err := LoadKeyPair(KeyPairOptions{CertFile: vol.certFile(), KeyFile: vol.keyFile(), Logger: logger, CheckInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveLocal(t, tlsAPIServer(t, kp.GetCertificate))

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.pool}, DisableKeepAlives: true}}
	resp, err := client.Get("https://" + addr + "/api/v1/ok")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("GET /api/v1/ok: %d over %+v, want 200 over TLS 1.2 or later", resp.StatusCode, resp.TLS)
	}

	t.Run("plain HTTP gets no 200", func(t *testing.T) {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/api/v1/ok")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatal("plain HTTP request answered 200")
			}
		}
	})
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			conn.Close()
			t.Fatal("TLS 1.1 handshake succeeded")
		}
		if !strings.Contains(err.Error(), "protocol version") { // the server's alert, not a client-side refusal
			t.Fatalf("TLS 1.1 handshake: %v, want the server's protocol version alert", err)
		}
	})

	if got := servedSerial(t, addr, ca.pool); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}
	cert2, key2 := ca.issue(t, 2)
	vol.update(t, cert2, key2)
	eventually(t, "a new connection sees the rotated certificate", func() bool { return servedSerial(t, addr, ca.pool) == 2 })

	// a broken pair: the certificate of serial 3 with the key of serial 2
	cert3, _ := ca.issue(t, 3)
	vol.update(t, cert3, key2)
	eventually(t, "the broken pair is logged", func() bool {
		if got := servedSerial(t, addr, ca.pool); got != 2 {
			t.Fatalf("serial %d after a broken rotation, want the last good one, 2", got)
		}
		return len(errorEntries(logged())) > 0
	})
	if got := servedSerial(t, addr, ca.pool); got != 2 {
		t.Fatalf("serial %d after the broken pair was seen, want the last good one, 2", got)
	}
	if errs := errorEntries(logged()); !strings.Contains(fmt.Sprint(errs[0].Err), "private key does not match public key") {
		t.Fatalf("logged %v, want the mismatch", errs[0].Err)
	}

	cert4, key4 := ca.issue(t, 4)
	vol.update(t, cert4, key4)
	eventually(t, "a fixed pair is served", func() bool { return servedSerial(t, addr, ca.pool) == 4 })
}

// GetCertificate reads the files at most once per check interval, loads a changed pair, and
// logs a broken one once per change while the last good pair keeps serving.
func TestKeyPairReload(t *testing.T) {
	ca := newTestCA(t)
	certA, keyA := ca.issue(t, 1)
	vol := newSecretVolume(t, certA, keyA)
	logger, logged := bufferedLogger(t)
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	kp, err := LoadKeyPair(KeyPairOptions{CertFile: vol.certFile(), KeyFile: vol.keyFile(), Logger: logger,
		CheckInterval: 5 * time.Second, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	if err != nil {
		t.Fatal(err)
	}
	serial := func() int64 {
		t.Helper()
		c, err := kp.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil || c == nil {
			t.Fatalf("GetCertificate = %v, %v", c, err)
		}
		return c.Leaf.SerialNumber.Int64()
	}
	step := func(name string, d time.Duration, update func(), wantSerial int64, wantErrors int) {
		t.Helper()
		if update != nil {
			update()
		}
		advance(d)
		if got := serial(); got != wantSerial {
			t.Fatalf("%s: serial %d, want %d", name, got, wantSerial)
		}
		if got := len(errorEntries(logged())); got != wantErrors {
			t.Fatalf("%s: %d errors logged, want %d: %v", name, got, wantErrors, logged())
		}
	}
	certB, keyB := ca.issue(t, 2)
	certC, keyC := ca.issue(t, 3)
	step("loaded", 0, nil, 1, 0)
	step("rotated, interval not passed", 4*time.Second, func() { vol.update(t, certB, keyB) }, 1, 0)
	step("interval passed", time.Second, nil, 2, 0)
	step("broken pair", 5*time.Second, func() { vol.update(t, certC, keyB) }, 2, 1)
	step("broken pair, next check", 5*time.Second, nil, 2, 1)
	step("another broken pair", 5*time.Second, func() { vol.update(t, []byte("not PEM"), keyB) }, 2, 2)
	step("fixed", 5*time.Second, func() { vol.update(t, certC, keyC) }, 3, 2)
	step("fixed, next check", 5*time.Second, nil, 3, 2)
	// the files gone (a read error) is a change too, logged once
	step("files gone", 5*time.Second, func() { _ = os.RemoveAll(vol.dir) }, 3, 3)
	step("files gone, next check", 5*time.Second, nil, 3, 3)
}

// A pair that does not load fails LoadKeyPair with an error that names the problem.
func TestLoadKeyPairErrors(t *testing.T) {
	ca := newTestCA(t)
	cert1, key1 := ca.issue(t, 1)
	_, key2 := ca.issue(t, 2)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, other, garbage := write("tls.crt", cert1), write("tls.key", key1), write("other.key", key2), write("garbage", []byte("x"))
	if _, err := LoadKeyPair(KeyPairOptions{CertFile: cert, KeyFile: key}); err != nil {
		t.Fatalf("good pair: %v", err)
	}
	for _, tc := range []struct {
		name, cert, key, want string
	}{
		{"missing certificate", filepath.Join(dir, "missing"), key, "read TLS certificate"},
		{"missing key", cert, filepath.Join(dir, "missing"), "read TLS private key"},
		{"key of another certificate", cert, other, "private key does not match public key"},
		{"not PEM", garbage, key, "failed to find any PEM data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadKeyPair(KeyPairOptions{CertFile: tc.cert, KeyFile: tc.key})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one with %q", err, tc.want)
			}
			if errors.Is(err, os.ErrNotExist) != strings.HasPrefix(tc.name, "missing") {
				t.Fatalf("error %v: wraps ErrNotExist = %v", err, errors.Is(err, os.ErrNotExist))
			}
		})
	}
}
