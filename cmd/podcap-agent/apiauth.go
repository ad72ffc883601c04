package main

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent"
	"github.com/podcap/podcap/agent/kubeauth"
)

// Review client rate: a request costs at most one TokenReview and, for a list, one
// SubjectAccessReview per namespace that has captures (most are cached). Its own client, so
// that a burst of API callers never delays the pod informer or the Events.
const (
	authClientQPS   = 50
	authClientBurst = 100
)

// newAPIGuard builds the API's authentication and authorisation: TokenReview and
// SubjectAccessReview through their own client, the static token of --api-token-file
// (opt-in), the client certificates of apiCAs (--api-client-ca-file, nil without); it logs
// how the API authenticates.
func newAPIGuard(log klog.Logger, o *Options, kcfg *rest.Config, reg prometheus.Registerer, apiCAs *agent.ClientCAs) (*agent.APIGuard, error) {
	token, off, err := readToken(o.APITokenFile)
	if err != nil {
		return nil, err
	}
	if o.APITokenFile != "" && off != "" {
		log.Info("Static API token off: callers need Kubernetes credentials", "why", off)
	}
	cfg := rest.CopyConfig(kcfg)
	cfg.UserAgent = "podcap-agent/auth"
	cfg.QPS, cfg.Burst = authClientQPS, authClientBurst
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("api auth client: %w", err)
	}
	opts := kubeauth.Options{
		TokenReviews: client.AuthenticationV1().TokenReviews(), SubjectAccessReviews: client.AuthorizationV1().SubjectAccessReviews(),
		StaticToken: token, Registerer: reg,
	}
	if apiCAs != nil {
		opts.ClientCAs = apiCAs.Pool
	}
	auth, err := kubeauth.New(opts)
	if err != nil {
		return nil, err
	}
	log.Info("API authenticates callers with TokenReview and authorises them with SubjectAccessReview (get pods/capture in the namespace)",
		"staticToken", auth.HasStaticToken(), "clientCertificates", auth.VerifiesClientCerts(), "clientCAFile", o.APIClientCAFile,
		"metricsRequireAuth", o.MetricsRequireAuth)
	return agent.NewAPIGuard(auth, log.WithName("api")), nil
}

// loadClientCAs loads the bundle of flag's file, nil without one.
func loadClientCAs(log klog.Logger, flag, file string) (*agent.ClientCAs, error) {
	if file == "" {
		return nil, nil
	}
	cas, err := agent.LoadClientCAs(agent.ClientCAOptions{File: file, Logger: log.WithName("tls")})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	log.Info("API server verifies client certificates (the bundle is read again when it changes)", "flag", flag, "clientCAFile", file)
	return cas, nil
}
