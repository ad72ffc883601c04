package alerts

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// admission is what Record does with one alert.
type admission int

const (
	admitApply   admission = iota // apply the object: it exists, or is a renewal
	admitReserve                  // apply the object, counted in pending until the informer has it
	admitLookup                   // an ended alert the cache does not know: apply only if the object exists
	admitRefuse                   // over a bound
	admitCurrent                  // the cached object already says this, renewed within unchangedFor: no write
)

// unchangedFor is how recently an object must have been written for an alert whose every
// field a policy sees it already holds to be recorded without a write: a retried notification (after a
// 503, or the same alert in two notifications) costs no request, while a renewal by
// Alertmanager's group_interval or repeat_interval (minutes) still moves lastNotifiedAt on.
const unchangedFor = 30 * time.Second

// recordParallel bounds a notification's API requests in flight. The store's client limits
// the rate (QPS); this bounds goroutines and the requests the API server sees at once.
const recordParallel = 8

// Record applies one CaptureAlert object per alert of n (see the comment at the top of
// store.go): firing alerts are created or renewed within the bounds, resolved ones update an
// existing object only, and an alert the object already holds (written less than
// unchangedFor ago) is recorded without a write. Alerts are admitted in their order in n
// and written up to recordParallel at a time. On the first API error it stops starting
// writes and returns that error with what it did: the alerts it counts are recorded, and
// recording them again is harmless.
func (s *Store) Record(ctx context.Context, n Notification) (Recorded, error) {
	for _, a := range n.Alerts {
		if !validFingerprint(a.Fingerprint) {
			// Decode validated it: a caller's bug, not the sender's fault
			return Recorded{}, fmt.Errorf("%w: fingerprint %s is not 16 lowercase hexadecimal digits", ErrInvalid, quote(a.Fingerprint))
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu   sync.Mutex
		r    Recorded
		wg   sync.WaitGroup
		slot = make(chan struct{}, recordParallel)
	)
	count := func(o outcome) {
		mu.Lock()
		defer mu.Unlock()
		switch o {
		case outcomeRecorded:
			r.Recorded++
		case outcomeRefused:
			r.Refused++
		}
	}
	for _, a := range n.Alerts {
		now := s.clock.Now()
		obj := toObject(s.o.Namespace, s.o.Node, n, a, now)
		adm, reason := s.admit(a, objectHash(obj), now)
		switch adm {
		case admitRefuse:
			count(outcomeRefused)
			s.refused(a, reason, now)
			continue
		case admitCurrent:
			count(outcomeRecorded)
			s.metrics.unchanged.Inc()
			continue
		}
		select {
		case slot <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil { // a write failed, or the request ended: start no more
			if adm == admitReserve {
				s.unreserve(a.Fingerprint)
			}
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-slot; wg.Done() }()
			o, err := s.write(ctx, a, obj, adm, now)
			if err != nil {
				cancel(err)
				return
			}
			count(o)
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return r, err
	}
	return r, nil
}

// outcome is what write did with one alert.
type outcome int

const (
	outcomeRecorded outcome = iota
	outcomeRefused
	outcomeSkipped // an ended alert without an object
)

// write applies obj, the object of a, as admit decided; an error is transient.
func (s *Store) write(ctx context.Context, a Alert, obj *unstructured.Unstructured, adm admission, now time.Time) (outcome, error) {
	res := s.client.Resource(CaptureAlertGVR).Namespace(s.o.Namespace)
	if adm == admitLookup {
		_, err := res.Get(ctx, a.Fingerprint, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			s.metrics.unknownEnded.Inc()
			return outcomeSkipped, nil
		}
		if err != nil {
			s.metrics.errors.WithLabelValues(opGet).Inc()
			return 0, fmt.Errorf("get CaptureAlert %s: %w", a.Fingerprint, err)
		}
	}
	_, err := res.Apply(ctx, a.Fingerprint, obj, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		if adm == admitReserve {
			s.unreserve(a.Fingerprint)
		}
		if apierrors.IsInvalid(err) {
			// permanent: the object is over the CRD's bounds (Limits above the defaults);
			// retrying the notification cannot help
			s.refused(a, RefusedInvalid, now)
			s.log.Error(err, "CaptureAlert refused by the API server", "fingerprint", a.Fingerprint)
			return outcomeRefused, nil
		}
		// transient: the API server did not take it; Alertmanager retries
		s.metrics.errors.WithLabelValues(opApply).Inc()
		return 0, fmt.Errorf("apply CaptureAlert %s: %w", a.Fingerprint, err)
	}
	s.metrics.recorded.WithLabelValues(a.Status).Inc()
	return outcomeRecorded, nil
}

// admit decides what Record does with a, whose object's hash is hash (objectHash), at now, from the cache and
// this store's pending applies; it reserves a place for a new active alert.
func (s *Store) admit(a Alert, hash string, now time.Time) (admission, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, exists := s.entries[a.Fingerprint]
	_, pending := s.pending[a.Fingerprint]
	switch {
	case exists && !pending && now.Sub(e.lastNotified) < unchangedFor && hash != "" && e.hash == hash:
		return admitCurrent, ""
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

// objectHash is the hash an entry of obj would have: equal to a cached entry's when the
// object would change none of the fields a policy sees. Empty if obj cannot be an entry.
func objectHash(obj *unstructured.Unstructured) string {
	e, err := toEntry(obj)
	if err != nil {
		return ""
	}
	return e.hash
}
