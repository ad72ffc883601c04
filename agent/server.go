package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// Server serves the agent's HTTP endpoints: /healthz (the process serves), /readyz (the pod
// cache synced), /metrics (Prometheus), and the API routes added with Handle; over HTTPS
// after UseTLS.
type Server struct {
	addr  string
	ready func() bool
	mux   *http.ServeMux
	// getCertificate, if set, makes the server serve HTTPS only
	getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// NewServer builds the HTTP server on addr; ready decides /readyz.
func NewServer(addr string, gatherer prometheus.Gatherer, ready func() bool) *Server {
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
	// a failing collector never fails the scrape
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	return &Server{addr: addr, ready: ready, mux: mux}
}

// Handle adds a route (a net/http ServeMux pattern).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// UseTLS makes Run serve HTTPS, TLS 1.2 or later, on every path, with the certificate
// getCertificate returns for each handshake (KeyPair.GetCertificate); the listener then
// answers a plain HTTP request with 400. Call it before Run.
func (s *Server) UseTLS(getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)) {
	s.getCertificate = getCertificate
}

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
	klog.FromContext(ctx).Info("Serving health and metrics", "address", ln.Addr().String(), "tls", srv.TLSConfig != nil)
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
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down http: %w", err)
	}
	return nil
}
