package kubeauth

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Results, the label values of the metrics.
const (
	resultOK              = "ok"
	resultUnauthenticated = "unauthenticated"
	resultAllowed         = "allowed"
	resultDenied          = "denied"
	resultError           = "error"
)

type authMetrics struct {
	authentications *prometheus.CounterVec
	authorizations  *prometheus.CounterVec
}

func newAuthMetrics(reg prometheus.Registerer) (authMetrics, error) {
	m := authMetrics{
		authentications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_api_authentications_total",
			Help: "Authentications of API callers by result: ok, unauthenticated (no or refused credentials: 401), error (the API server could not be asked: 503). Cache hits count too.",
		}, []string{"result"}),
		authorizations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcap_api_authorizations_total",
			Help: "Authorization decisions on API callers by result: allowed, denied (403, or a namespace left out of a list), error (the API server could not be asked: 503). Cache hits count too.",
		}, []string{"result"}),
	}
	for _, r := range []string{resultOK, resultUnauthenticated, resultError} {
		m.authentications.WithLabelValues(r)
	}
	for _, r := range []string{resultAllowed, resultDenied, resultError} {
		m.authorizations.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.authentications, m.authorizations} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return m, fmt.Errorf("register api auth metrics: %w", err)
	}
	return m, nil
}
