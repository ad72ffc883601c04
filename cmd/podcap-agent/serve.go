package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent"
	"github.com/podcap/podcap/agent/alerts"
	"github.com/podcap/podcap/agent/metrics"
)

// The agent's two servers: health and metrics over plain HTTP, the API (retrieval, decisions,
// Alertmanager webhook) over TLS behind Kubernetes authentication (apiauth.go).

// apiTransport is how the API server protects its bearer tokens, and the podcap_api_tls_info
// label that says so: the mounted key pair (loaded now: a bad pair is an error), else a
// self-signed certificate made now, else, on the explicit opt-out only, plain HTTP.
func apiTransport(log klog.Logger, o *Options) (agent.APITransport, string, error) {
	switch {
	case o.InsecureServeAPIOverHTTP:
		// an error entry, to stand out: the operator chose to send tokens in cleartext
		log.Error(nil, "INSECURE: the API serves plain HTTP, its bearer token crosses the network in cleartext",
			"flag", "--insecure-serve-api-over-http", "apiListenAddress", o.APIListenAddress)
		return agent.APITransport{InsecureHTTP: true}, metrics.APITLSOff, nil
	case o.TLSCertFile != "":
		kp, err := agent.LoadKeyPair(agent.KeyPairOptions{CertFile: o.TLSCertFile, KeyFile: o.TLSPrivateKeyFile, Logger: log.WithName("tls")})
		if err != nil {
			return agent.APITransport{}, "", fmt.Errorf("--tls-cert-file, --tls-private-key-file: %w", err)
		}
		return agent.APITransport{GetCertificate: kp.GetCertificate}, metrics.APITLSFiles, nil
	default:
		ss, err := agent.NewSelfSigned(agent.SelfSignedOptions{
			Hosts:  []string{o.NodeName, o.NodeIP, "localhost", "127.0.0.1", "::1"},
			Logger: log.WithName("tls"),
		})
		if err != nil {
			return agent.APITransport{}, "", err
		}
		return agent.APITransport{GetCertificate: ss.GetCertificate}, metrics.APITLSSelfSigned, nil
	}
}

// newServers builds the plain HTTP server of health and metrics and the API server over
// transport, the API behind its authentication and authorisation (newAPIGuard), and on it
// the Alertmanager webhook recording into rec (off, and logged why, without rec or without
// authentication). With --metrics-require-auth, /metrics moves to the API server, behind the
// same guard. The TLS server asks for client certificates of both CA bundles given
// (--webhook-client-ca-file, --api-client-ca-file); each route verifies against its own.
func newServers(log klog.Logger, o *Options, kcfg *rest.Config, reg *prometheus.Registry, ctrl *agent.Controller,
	captures agent.Retrieval, transport agent.APITransport, rec alerts.Recorder) ([]*agent.Server, error) {
	hookCAs, err := loadClientCAs(log, "--webhook-client-ca-file", o.WebhookClientCAFile)
	if err != nil {
		return nil, err
	}
	apiCAs, err := loadClientCAs(log, "--api-client-ca-file", o.APIClientCAFile)
	if err != nil {
		return nil, err
	}
	var cas []*agent.ClientCAs
	for _, c := range []*agent.ClientCAs{hookCAs, apiCAs} {
		if c != nil {
			cas = append(cas, c)
		}
	}
	if len(cas) > 0 {
		transport.ClientCAs = agent.JoinedPool(cas...)
	}
	api, err := agent.NewAPIServer(o.APIListenAddress, transport)
	if err != nil {
		return nil, err
	}
	guard, err := newAPIGuard(log, o, kcfg, reg, apiCAs)
	if err != nil {
		return nil, err
	}
	api.CountRequests(reg)
	ctrl.RegisterAPI(api, guard, captures)
	hook, err := newWebhook(log, o, reg, rec, hookCAs)
	if err != nil {
		return nil, err
	}
	api.Handle(alerts.WebhookPath, hook)
	var gatherer prometheus.Gatherer = reg
	if o.MetricsRequireAuth {
		api.Handle("GET /metrics", guard.NonResource("/metrics", agent.MetricsHandler(reg)))
		gatherer = nil // the plain server's /metrics says where it went
	}
	return []*agent.Server{agent.NewMetricsServer(o.ListenAddress, gatherer, ctrl.Synced), api}, nil
}

// newWebhook builds the Alertmanager webhook; it logs whether it is on, how it authenticates,
// or why it is off (it then answers 404).
func newWebhook(log klog.Logger, o *Options, reg prometheus.Registerer, rec alerts.Recorder, cas *agent.ClientCAs) (*alerts.Webhook, error) {
	opts := alerts.WebhookOptions{Recorder: rec, TokenFile: o.WebhookTokenFile, RequireClientCert: cas != nil,
		Registerer: reg, Logger: log.WithName("webhook")}
	if cas != nil {
		opts.ClientCAs = cas.Pool
	}
	if rec == nil { // no alert store: the webhook is off whatever its authentication
		opts = alerts.WebhookOptions{Recorder: noRecorder{}, Registerer: reg, Logger: opts.Logger}
	}
	hook, err := alerts.NewWebhook(opts)
	if err != nil {
		return nil, fmt.Errorf("alertmanager webhook: %w", err)
	}
	if why := hook.Off(); why != "" {
		if rec == nil {
			why = "no alert store"
		}
		log.Info("Alertmanager webhook off: it answers 404", "why", why, "path", alerts.WebhookPath)
	} else {
		log.Info("Alertmanager webhook on", "path", alerts.WebhookPath, "bearerToken", hook.RequiresToken(), "clientCertificate", hook.RequiresClientCert())
	}
	return hook, nil
}

// noRecorder stands for a missing alert store; an off webhook never calls it.
type noRecorder struct{}

func (noRecorder) Record(context.Context, alerts.Notification) (alerts.Recorded, error) {
	return alerts.Recorded{}, errors.New("no alert store")
}

// readToken reads the API's static bearer token (surrounding white space trimmed). No file,
// an empty one or a token shorter than agent.MinAPITokenLen bytes mean no static token (the
// API then takes Kubernetes credentials only), and off says why. An unreadable file is an
// error.
func readToken(path string) (token, off string, err error) {
	if path == "" {
		return "", "no --api-token-file", nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Sprintf("--api-token-file %s does not exist", path), nil
	}
	if err != nil {
		return "", "", fmt.Errorf("read --api-token-file: %w", err)
	}
	token = strings.TrimSpace(string(b))
	if len(token) < agent.MinAPITokenLen {
		return "", fmt.Sprintf("the token in --api-token-file %s is %d bytes, shorter than the minimum of %d (e.g. openssl rand -hex 24)",
			path, len(token), agent.MinAPITokenLen), nil
	}
	return token, "", nil
}
