package alerts

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// collectLoop collects garbage every GCInterval (jittered) until ctx ends.
func (s *Store) collectLoop(ctx context.Context) {
	log := klog.FromContext(ctx)
	for {
		t := s.clock.NewTimer(jittered(s.o.GCInterval))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		n, err := s.CollectGarbage(ctx)
		if err != nil && ctx.Err() == nil {
			log.Error(err, "Deleting expired CaptureAlert objects; trying again next round", "deleted", n)
		} else if n > 0 {
			log.V(2).Info("Deleted expired CaptureAlert objects", "deleted", n)
		}
	}
}

// CollectGarbage deletes the objects in the cache that have been inactive for longer than
// Retention, each with a precondition on the UID and resourceVersion the cache saw, so that a
// renewal in the meantime wins. NotFound and Conflict are not errors: another agent did it,
// or the object changed (a later round sees it again). It stops at the first other error and
// returns how many objects it deleted.
func (s *Store) CollectGarbage(ctx context.Context) (int, error) {
	type victim struct{ name, uid, rv string }
	now := s.clock.Now()
	var victims []victim
	s.mu.Lock()
	for name, e := range s.entries {
		if !e.active(now, s.o.TTL) && now.Sub(e.inactiveSince(s.o.TTL)) >= s.o.Retention {
			victims = append(victims, victim{name, e.uid, e.resourceVersion})
		}
	}
	s.mu.Unlock()
	res := s.client.Resource(CaptureAlertGVR).Namespace(s.o.Namespace)
	deleted := 0
	for _, v := range victims {
		uid, rv := types.UID(v.uid), v.rv
		err := res.Delete(ctx, v.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		switch {
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			continue
		case err != nil:
			s.metrics.errors.WithLabelValues(opDelete).Inc()
			return deleted, fmt.Errorf("delete CaptureAlert %s: %w", v.name, err)
		}
		deleted++
		s.metrics.deleted.Inc()
	}
	return deleted, nil
}
