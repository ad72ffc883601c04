package alerts

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// WebhookPath is the route of the Alertmanager webhook on the agent's API server.
const WebhookPath = "/api/v1/alerts"

// Webhook defaults; see WebhookOptions.
const (
	DefaultWebhookTimeout     = 5 * time.Second
	DefaultWebhookMaxInFlight = 8
)

// WebhookOptions configure a Webhook. At least one of TokenFile and RequireClientCert turns
// it on; with both, a request needs both.
type WebhookOptions struct {
	// Recorder records the alerts; required.
	Recorder Recorder
	// TokenFile holds the bearer token Alertmanager sends (its http_config.authorization
	// credentials_file), at least MinTokenLen bytes; read again when it changes.
	TokenFile string
	// RequireClientCert requires a client certificate verified by the API server's client CA
	// (the server asks for one with VerifyClientCertIfGiven and a pool of client CAs).
	RequireClientCert bool
	// ClientCAs, if set with RequireClientCert, are the webhook's own CAs
	// (--webhook-client-ca-file): the certificate must verify against them, not only against
	// the TLS server's pool, which may also hold the API's user CAs (--api-client-ca-file).
	ClientCAs func() *x509.CertPool
	// Limits bound what one notification may hold.
	Limits Limits
	// Timeout bounds waiting for an in-flight slot plus Record; 0 means
	// DefaultWebhookTimeout. Alertmanager 0.25 gives a notification at least 10 s (and
	// group_interval if longer) including its retries: answering 503 within 5 s leaves it
	// time to retry in the same flush.
	Timeout time.Duration
	// MaxInFlight bounds the notifications decoded or recorded at once (each holds up to
	// Limits.MaxBodyBytes); 0 means DefaultWebhookMaxInFlight. A request that finds no slot
	// within Timeout is answered 503.
	MaxInFlight int
	// TokenCheckInterval is how often, at most, TokenFile is read again; 0 means
	// DefaultTokenCheckInterval.
	TokenCheckInterval time.Duration
	// Registerer registers the webhook's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger logs refused requests (rate-limited) and token reloads.
	Logger klog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Webhook serves POST /api/v1/alerts: Alertmanager's webhook notifications (payload version
// "4"), authenticated, decoded by [Decode] and recorded by a [Recorder].
//
// # Answers, and what Alertmanager 0.25 does with them
//
// Alertmanager's webhook notifier (notify/webhook, notify.Retrier) treats any 2xx as
// delivered, retries any 5xx and a failed connection, and gives up on every other code. A
// notification that was given up is not written to Alertmanager's notification log, so the
// group is sent again at its next flush, group_interval later (default 5m), as long as it
// still has firing alerts. Proved against the real Alertmanager by TestRealAlertmanager:
//
//	code  when                                     Alertmanager 0.25
//	200   every alert recorded (or refused by the  delivered; not sent again before
//	      bound of active alerts: Recorded.Refused) repeat_interval or a change of the group
//	400   malformed JSON, version other than "4",  given up after 1 attempt
//	      missing or out-of-bounds field (text)     (alertmanager_notifications_failed_total
//	401   token missing or wrong                    +1, log "notify retry canceled due to
//	      (WWW-Authenticate: Bearer)                unrecoverable error after 1 attempts"
//	403   client certificate required, none given   with our answer's text); sent again
//	404   the webhook is off on this agent          at the next group_interval
//	405   not POST                                 (a 4xx never makes it succeed by itself:
//	413   body over Limits.MaxBodyBytes             fix the configuration)
//	415   Content-Type present and not JSON
//	503   Record failed (API server unreachable),  retried in the same flush with exponential
//	      no in-flight slot within Timeout          backoff (0.5 s, ×1.5, jittered) until the
//	                                                flush's deadline (max(10 s, group_interval)),
//	                                                then again at the next flush; log "Notify
//	                                                success" attempts=N once it passes
//	 —    TLS handshake refused (a client          retried like a 5xx (its log: "remote
//	      certificate the client CA does not        error: tls: unknown certificate
//	      verify)                                   authority")
//
// 401 and 403 differ on purpose: 401 (with WWW-Authenticate: Bearer) means the bearer token is
// missing or wrong, the credential HTTP can ask for; 403 means the client certificate is
// missing while the webhook requires one — a token cannot fix that, so no challenge. The
// certificate is checked first. A certificate that is given but not verified by the client CA
// never reaches the handler: the TLS handshake fails.
//
// A request whose body cannot be read (the client went away, or the server's read timeout)
// is counted with code 499 and is not the sender's fault; nobody reads the answer. Bodies of
// answers are short text, the decoder's bounded message at most (Alertmanager puts the whole
// body into its own log line): nothing of the request is echoed beyond that.
//
// Every request is counted in podcap_webhook_requests_total{code} and timed in
// podcap_webhook_request_duration_seconds; every alert of a decoded notification in
// podcap_alerts_received_total{status}. Refused requests are logged, at most a few per 10 s
// with the count of those left out.
type Webhook struct {
	rec         Recorder
	token       *tokenFile // nil: no token required
	requireCert bool
	clientCAs   func() *x509.CertPool // nil: the TLS server's verification is the webhook's
	off         string                // why the webhook is off; "" when on
	lim         Limits
	timeout     time.Duration
	slots       chan struct{} // one per notification in flight
	now         func() time.Time
	log         klog.Logger
	refusals    *logLimiter
	m           webhookMetrics
}

// NewWebhook builds the webhook of o. Without any authentication (no TokenFile, no
// RequireClientCert) the webhook is off: it answers every request 404 and Off says why, for
// the caller to log. While TokenFile holds no usable token (missing, empty, shorter than
// MinTokenLen) it is off the same way, and it turns on by itself when the file gets one (an
// optional Secret created after the agent started), found by the same checks that follow a
// rotation. A token file that cannot be read, or a missing Recorder, is an error.
//
// Off answers 404, not 503: it is the agent's configuration, which no retry fixes, and a 5xx
// would make Alertmanager retry with backoff through every flush. The 404 shows in
// Alertmanager's log and alertmanager_notifications_failed_total, with our text.
func NewWebhook(o WebhookOptions) (*Webhook, error) {
	if o.Recorder == nil {
		return nil, errors.New("webhook: no Recorder")
	}
	if o.Timeout < 0 || o.MaxInFlight < 0 || o.TokenCheckInterval < 0 {
		return nil, errors.New("webhook: Timeout, MaxInFlight and TokenCheckInterval must not be negative")
	}
	w := &Webhook{
		rec:         o.Recorder,
		requireCert: o.RequireClientCert,
		clientCAs:   o.ClientCAs,
		lim:         o.Limits.WithDefaults(),
		timeout:     cmp.Or(o.Timeout, DefaultWebhookTimeout),
		slots:       make(chan struct{}, cmp.Or(o.MaxInFlight, DefaultWebhookMaxInFlight)),
		now:         o.Now,
		log:         o.Logger,
	}
	if w.now == nil {
		w.now = time.Now
	}
	w.refusals = newLogLimiter(w.now)
	var err error
	if w.m, err = newWebhookMetrics(o.Registerer); err != nil {
		return nil, err
	}
	switch {
	case o.TokenFile == "" && !o.RequireClientCert:
		w.off = "no authentication configured: set --webhook-token-file and/or --webhook-client-ca-file"
	case o.TokenFile != "":
		if w.token, err = newTokenFile(o.TokenFile, cmp.Or(o.TokenCheckInterval, DefaultTokenCheckInterval), w.now, o.Logger); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Off says why the webhook is off now, or "" when it is on.
func (w *Webhook) Off() string {
	if w.off != "" || w.token == nil {
		return w.off
	}
	if why := w.token.missing(); why != "" {
		return why + "; the webhook turns on when the file holds a usable token"
	}
	return ""
}

// RequiresToken and RequiresClientCert say how the webhook authenticates (when it is on), for
// the log.
func (w *Webhook) RequiresToken() bool      { return w.Off() == "" && w.token != nil }
func (w *Webhook) RequiresClientCert() bool { return w.Off() == "" && w.requireCert }

// ownCA reports whether the client's chain (leaf first) verifies against the webhook's own
// CAs, for client authentication; true without them (the server's pool is the webhook's).
func (w *Webhook) ownCA(chain []*x509.Certificate) bool {
	if w.clientCAs == nil {
		return true
	}
	if len(chain) == 0 {
		return false
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: w.clientCAs(), Intermediates: intermediates, CurrentTime: w.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil
}

// errWebhookTimeout is the cause of a request context that reached the webhook's Timeout.
var errWebhookTimeout = errors.New("webhook timeout")

// ServeHTTP answers one request and counts it.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := w.now()
	code, why := w.serve(rw, r)
	w.m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	w.m.duration.Observe(w.now().Sub(start).Seconds())
	if code != http.StatusOK {
		if n, ok := w.refusals.allow(); ok {
			w.log.Info("Webhook request refused", "code", code, "why", why, "remote", r.RemoteAddr, "leftOutSinceLast", n)
		}
	}
}

// serve answers r; it returns the code and, for a refusal, why (for the log).
func (w *Webhook) serve(rw http.ResponseWriter, r *http.Request) (int, string) {
	if off := w.Off(); off != "" {
		return answer(rw, http.StatusNotFound, "the Alertmanager webhook is off on this agent: "+off)
	}
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		return answer(rw, http.StatusMethodNotAllowed, "use POST")
	}
	if w.requireCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || !w.ownCA(r.TLS.PeerCertificates)) {
		return answer(rw, http.StatusForbidden, "a client certificate signed by the agent's --webhook-client-ca-file is required")
	}
	if w.token != nil {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			rw.Header().Set("WWW-Authenticate", `Bearer realm="podcap-webhook"`)
			return answer(rw, http.StatusUnauthorized, "bearer token missing")
		}
		if !w.token.matches(got) {
			rw.Header().Set("WWW-Authenticate", `Bearer realm="podcap-webhook", error="invalid_token"`)
			return answer(rw, http.StatusUnauthorized, "bearer token wrong")
		}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		// Alertmanager sends application/json; a missing type is tolerated (curl -d sends
		// another one, which is refused: say what was expected)
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return answer(rw, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		}
	}
	ctx, cancel := context.WithTimeoutCause(r.Context(), w.timeout, errWebhookTimeout)
	defer cancel()
	select {
	case w.slots <- struct{}{}:
		defer func() { <-w.slots }()
	case <-ctx.Done():
		return w.ctxDone(rw, r, "no free slot: too many notifications in flight")
	}
	n, err := Decode(r.Body, w.lim)
	switch {
	case errors.Is(err, ErrTooLarge):
		return answer(rw, http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, ErrInvalid):
		return answer(rw, http.StatusBadRequest, err.Error())
	case err != nil:
		return clientGone, err.Error() // nobody reads an answer
	}
	for _, a := range n.Alerts {
		w.m.alerts.WithLabelValues(a.Status).Inc()
	}
	res, err := w.rec.Record(ctx, n)
	if err != nil {
		if ctx.Err() != nil {
			return w.ctxDone(rw, r, "record: "+err.Error())
		}
		return answer(rw, http.StatusServiceUnavailable, "alerts not recorded, retry: "+truncate(err.Error(), 200))
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(rw).Encode(struct {
		Recorded int `json:"recorded"`
		Refused  int `json:"refused"`
	}{res.Recorded, res.Refused})
	return http.StatusOK, ""
}

// clientGone is the code counted when the client went away: nobody reads the answer.
const clientGone = 499

// ctxDone answers a request whose context ended: 503 on the webhook's own timeout (the
// sender retries), 499 when the client went away.
func (w *Webhook) ctxDone(rw http.ResponseWriter, r *http.Request, why string) (int, string) {
	if r.Context().Err() != nil {
		return clientGone, "client went away: " + why
	}
	return answer(rw, http.StatusServiceUnavailable, fmt.Sprintf("alerts not recorded within %s, retry: %s", w.timeout, truncate(why, 200)))
}

// answer writes a short text answer; it returns code and text for the log.
func answer(rw http.ResponseWriter, code int, text string) (int, string) {
	http.Error(rw, text, code)
	return code, text
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
