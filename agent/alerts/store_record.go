package alerts

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// admission is what Record does with one alert.
type admission int

const (
	admitApply   admission = iota // apply the object: it exists, or is a renewal
	admitReserve                  // apply the object, counted in pending until the informer has it
	admitLookup                   // an ended alert the cache does not know: apply only if the object exists
	admitRefuse                   // over a bound
)

// Record applies one CaptureAlert object per alert of n (see the comment at the top of
// store.go): firing alerts are created or renewed within the bounds, resolved ones update an
// existing object only. It stops at the first API error and returns it with what it did so far:
// the alerts before it are recorded, and recording them again is harmless.
func (s *Store) Record(ctx context.Context, n Notification) (Recorded, error) {
	var r Recorded
	res := s.client.Resource(CaptureAlertGVR).Namespace(s.o.Namespace)
	for _, a := range n.Alerts {
		if !validFingerprint(a.Fingerprint) {
			// Decode validated it: a caller's bug, not the sender's fault
			return r, fmt.Errorf("%w: fingerprint %s is not 16 lowercase hexadecimal digits", ErrInvalid, quote(a.Fingerprint))
		}
		now := s.clock.Now()
		adm, reason := s.admit(a, now)
		switch adm {
		case admitRefuse:
			r.Refused++
			s.refused(a, reason, now)
			continue
		case admitLookup:
			_, err := res.Get(ctx, a.Fingerprint, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				s.metrics.unknownEnded.Inc()
				continue
			}
			if err != nil {
				s.metrics.errors.WithLabelValues(opGet).Inc()
				return r, fmt.Errorf("get CaptureAlert %s: %w", a.Fingerprint, err)
			}
		}
		obj := toObject(s.o.Namespace, s.o.Node, n, a, now)
		_, err := res.Apply(ctx, a.Fingerprint, obj, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		if err != nil {
			if adm == admitReserve {
				s.unreserve(a.Fingerprint)
			}
			if apierrors.IsInvalid(err) {
				// permanent: the object is over the CRD's bounds (Limits above the defaults);
				// retrying the notification cannot help
				r.Refused++
				s.refused(a, RefusedInvalid, now)
				s.log.Error(err, "CaptureAlert refused by the API server", "fingerprint", a.Fingerprint)
				continue
			}
			// transient: the API server did not take it; Alertmanager retries
			s.metrics.errors.WithLabelValues(opApply).Inc()
			return r, fmt.Errorf("apply CaptureAlert %s: %w", a.Fingerprint, err)
		}
		r.Recorded++
		s.metrics.recorded.WithLabelValues(a.Status).Inc()
	}
	return r, nil
}

// admit decides what Record does with a, at now, from the cache and this store's pending
// applies; it reserves a place for a new active alert.
func (s *Store) admit(a Alert, now time.Time) (admission, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, exists := s.entries[a.Fingerprint]
	_, pending := s.pending[a.Fingerprint]
	switch {
	case !a.Active(now) && (exists || pending):
		return admitApply, ""
	case !a.Active(now):
		return admitLookup, ""
	case exists && e.active(now, s.o.TTL):
		return admitApply, "" // a renewal is never refused
	case pending:
		s.pending[a.Fingerprint] = now
		return admitApply, ""
	}
	for name, at := range s.pending {
		if now.Sub(at) >= pendingFor {
			delete(s.pending, name) // the informer never delivered it (deleted at once?)
		}
	}
	if s.countActiveLocked(now)+len(s.pending) >= s.o.MaxActive {
		return admitRefuse, RefusedMaxAlerts
	}
	if !exists {
		objects := len(s.entries)
		for name := range s.pending {
			if _, ok := s.entries[name]; !ok {
				objects++
			}
		}
		if objects >= s.o.MaxObjects {
			return admitRefuse, RefusedMaxObjects
		}
	}
	s.pending[a.Fingerprint] = now
	return admitReserve, ""
}

func (s *Store) unreserve(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, name)
}

// refused counts a refused alert and logs refusals at most once every refusedLogEvery.
func (s *Store) refused(a Alert, reason string, now time.Time) {
	s.metrics.refused.WithLabelValues(reason).Inc()
	s.mu.Lock()
	s.refusedSince++
	n := s.refusedSince
	due := s.refusedLog.IsZero() || now.Sub(s.refusedLog) >= refusedLogEvery
	if due {
		s.refusedSince, s.refusedLog = 0, now
	}
	s.mu.Unlock()
	if due {
		s.log.Info("Alerts refused: over a bound (podcap_alerts_refused_total counts each)", "reason", reason,
			"fingerprint", a.Fingerprint, "alertname", a.Labels["alertname"], "refusedSinceLastLog", n,
			"maxActive", s.o.MaxActive, "maxObjects", s.o.MaxObjects)
	}
}
