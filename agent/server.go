package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// Server serves one listener of the agent. The agent has two:
//   - the metrics server (NewMetricsServer), plain HTTP: /healthz (the process serves), /readyz
//     (the pod cache synced) and /metrics (Prometheus). Nothing on it takes credentials, so
//     probes and scrapers need no TLS set-up;
//   - the API server (NewAPIServer): the routes that take credentials (the API, the
//     Alertmanager webhook, and /metrics when it requires authentication), over HTTPS only,
//     unless its caller explicitly opted out; with client CAs it also verifies the client
//     certificates clients give.
type Server struct {
	name string // "metrics" or "api", in logs
	addr string
	mux  *http.ServeMux
	// getCertificate, if set, makes the server serve HTTPS only
	getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// clientCAs, if set, returns the CAs that verify the client certificates clients give
	// (not required), for each handshake
	clientCAs func() *x509.CertPool
	requests  *prometheus.CounterVec // podcap_api_requests_total; nil: not counted (CountRequests)
}

// NewMetricsServer builds the plain HTTP server of health and metrics on addr; ready decides
// /readyz. A request for /api/ gets 404 with where the API is: a client pointed at the old
// single port learns the way, and no handler here ever reads its token. A nil gatherer
// means /metrics is served on the API server, behind authentication (--metrics-require-auth,
// MetricsHandler): here it answers 404 saying so, for no bearer token should cross plain HTTP.
func NewMetricsServer(addr string, gatherer prometheus.Gatherer, ready func() bool) *Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "pod cache not synced yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if gatherer != nil {
		mux.Handle("GET /metrics", MetricsHandler(gatherer))
	} else {
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "not here: /metrics needs authentication on this agent (--metrics-require-auth) and is served over HTTPS on its --api-listen-address", http.StatusNotFound)
		})
	}
	mux.HandleFunc("/api/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not here: the API is served over HTTPS on the agent's --api-listen-address", http.StatusNotFound)
	})
	return &Server{name: "metrics", addr: addr, mux: mux}
}

// MetricsHandler serves gatherer's metrics to Prometheus; a failing collector never fails
// the scrape.
func MetricsHandler(gatherer prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// APITransport is how the API server protects its connections: exactly one of the fields.
type APITransport struct {
	// GetCertificate serves HTTPS, TLS 1.2 or later, with the certificate it returns for each
	// handshake (KeyPair.GetCertificate, SelfSigned.GetCertificate).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// InsecureHTTP serves plain HTTP: bearer tokens then cross the network in cleartext. Only
	// an explicit opt-out of the operator's sets it (--insecure-serve-api-over-http).
	InsecureHTTP bool
	// ClientCAs, with GetCertificate, asks clients for a certificate and verifies one that is
	// given against these CAs (tls.VerifyClientCertIfGiven): a client without a certificate
	// still connects (the API's routes take a bearer token instead), one with a certificate
	// the CAs do not verify fails the handshake, and a route that needs a client certificate
	// (the Alertmanager webhook with --webhook-client-ca-file) checks r.TLS.VerifiedChains.
	// It is called for each handshake (ClientCAs.Pool follows the bundle's rotation).
	ClientCAs func() *x509.CertPool
}

// ErrAPIWithoutTLS is NewAPIServer's error for a transport with neither a certificate nor the
// explicit opt-out.
var ErrAPIWithoutTLS = errors.New("the API serves only over TLS: no certificate, and no explicit opt-out to plain HTTP")

// NewAPIServer builds the server of the routes that take credentials, on addr, over TLS
// unless t opts out. It adds no route; Handle and RegisterAPI do.
func NewAPIServer(addr string, t APITransport) (*Server, error) {
	switch {
	case t.GetCertificate == nil && !t.InsecureHTTP:
		return nil, ErrAPIWithoutTLS
	case t.GetCertificate != nil && t.InsecureHTTP:
		return nil, errors.New("the API server's transport: a certificate and plain HTTP both asked for")
	case t.ClientCAs != nil && t.InsecureHTTP:
		return nil, errors.New("the API server's transport: client certificates need TLS, and plain HTTP was asked for")
	}
	return &Server{name: "api", addr: addr, mux: http.NewServeMux(), getCertificate: t.GetCertificate, clientCAs: t.ClientCAs}, nil
}

// Handle adds a route (a net/http ServeMux pattern).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, s.counted(pattern, h)) }

// Handler is the server's routes, for tests.
func (s *Server) Handler() http.Handler { return s.mux }

// httpServer is the server Run serves with. Every phase of a connection is bounded, so that a
// slow or stalled client holds a connection (and its goroutine) for a bounded time: the
// request headers, the whole request, the response (WriteTimeout; the slowest handler, a
// fresh policy evaluation, is bounded by --policy-eval-timeout, at most 10 s) and an idle
// keep-alive connection.
// A TLS handshake is bounded by the shortest of them (net/http), ReadHeaderTimeout.
func (s *Server) httpServer() *http.Server {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	if s.getCertificate != nil {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.getCertificate}
		if s.clientCAs != nil {
			base := srv.TLSConfig.Clone()
			base.ClientAuth = tls.VerifyClientCertIfGiven
			srv.TLSConfig.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
				c := base.Clone()
				c.ClientCAs = s.clientCAs() // the bundle as it is now
				return c, nil
			}
		}
	}
	return srv
}

// Run listens and serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.addr, err)
	}
	return s.serve(ctx, ln)
}

// serve serves on ln until ctx ends, then shuts down gracefully; it closes ln.
func (s *Server) serve(ctx context.Context, ln net.Listener) error {
	srv := s.httpServer()
	klog.FromContext(ctx).Info("Serving", "server", s.name, "address", ln.Addr().String(), "tls", srv.TLSConfig != nil)
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "") // the certificate comes from TLSConfig.GetCertificate
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", s.name, err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down %s: %w", s.name, err)
	}
	return nil
}
