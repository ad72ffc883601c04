package agent

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// CountRequests makes s count the requests of the routes it is given from now on (Handle,
// RegisterAPI) in podcap_api_requests_total{route,code}: route is the route's pattern (a
// bounded set), code the status answered. A live stream counts as its first status, when it
// ends, also when it is aborted.
func (s *Server) CountRequests(reg prometheus.Registerer) {
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podcap_api_requests_total",
		Help: "Requests to the agent's API server, by route (its pattern) and status code.",
	}, []string{"route", "code"})
	reg.MustRegister(s.requests)
}

// counted wraps h to count its requests as route; h itself when s counts nothing.
func (s *Server) counted(route string, h http.Handler) http.Handler {
	if s.requests == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &codeWriter{ResponseWriter: w}
		defer func() { // also when the handler aborts (panics)
			code := cw.code
			if code == 0 {
				code = http.StatusOK
			}
			s.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
		}()
		h.ServeHTTP(cw, r)
	})
}

// codeWriter records the status a handler answers; Unwrap lets http.ResponseController
// reach the connection (flushes, deadlines).
type codeWriter struct {
	http.ResponseWriter
	code int
}

func (c *codeWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *codeWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.ResponseWriter.Write(b)
}

func (c *codeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
