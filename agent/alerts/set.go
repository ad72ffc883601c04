package alerts

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/podcap/podcap/policy"
)

// CaptureAlert is the custom resource (deploy/crd/capturealerts.yaml) that carries one alert
// from the agent Alertmanager reached to every agent.
var CaptureAlertGVR = schema.GroupVersionResource{Group: "podcap.io", Version: "v1alpha1", Resource: "capturealerts"}

const (
	captureAlertAPIVersion = "podcap.io/v1alpha1"
	captureAlertKind       = "CaptureAlert"
)

// entry is one CaptureAlert object as the store keeps it: converted once, when the informer
// delivers it, into the store's own maps (never the informer cache's).
type entry struct {
	uid, resourceVersion string
	alert                policy.Alert // Labels and Annotations are never modified after conversion
	lastNotified         time.Time
	hash                 string // of alert: changes when any field a policy sees changes
}

// expiry is when the entry stops being active if nothing renews it: its known end or its
// last notification plus ttl, whichever is first.
func (e *entry) expiry(ttl time.Duration) time.Time {
	end := e.lastNotified.Add(ttl)
	if !e.alert.EndsAt.IsZero() && e.alert.EndsAt.Before(end) {
		end = e.alert.EndsAt
	}
	return end
}

// active reports whether the entry is an active alert at now: firing, its end (if known) not
// passed, renewed within ttl.
func (e *entry) active(now time.Time, ttl time.Duration) bool {
	return e.alert.Status == StatusFiring && now.Before(e.expiry(ttl))
}

// inactiveSince is when an inactive entry stopped being active: its expiry, or for a resolved
// alert the resolve's own time if that is earlier.
func (e *entry) inactiveSince(ttl time.Duration) time.Time {
	end := e.expiry(ttl)
	if e.alert.Status == StatusResolved && e.lastNotified.Before(end) {
		end = e.lastNotified
	}
	return end
}

// activeSet is the last computed set of active alerts, valid while the entries are unchanged
// (seq) and now is in [from, until): as time passes alerts only expire, so the set holds until
// its first member's expiry.
type activeSet struct {
	seq         uint64
	from, until time.Time // until is zero when the set is empty (nothing expires)
	alerts      []policy.Alert
	version     string
}

func (a *activeSet) valid(seq uint64, now time.Time) bool {
	return a.seq == seq && a.version != "" && !now.Before(a.from) && (a.until.IsZero() || now.Before(a.until))
}

// computeActive returns the active entries at now, sorted by fingerprint, their version and
// the first expiry among them (zero if none).
func computeActive(entries map[string]*entry, now time.Time, ttl time.Duration) (alerts []policy.Alert, version string, until time.Time) {
	active := make([]*entry, 0, len(entries))
	for _, e := range entries {
		if !e.active(now, ttl) {
			continue
		}
		active = append(active, e)
		if exp := e.expiry(ttl); until.IsZero() || exp.Before(until) {
			until = exp
		}
	}
	slices.SortFunc(active, func(a, b *entry) int { return strings.Compare(a.alert.Fingerprint, b.alert.Fingerprint) })
	h := sha256.New()
	h.Write([]byte("capturealerts\x00")) // the empty set has a version too
	alerts = make([]policy.Alert, len(active))
	for i, e := range active {
		alerts[i] = e.alert
		h.Write([]byte(e.hash))
	}
	return alerts, hex.EncodeToString(h.Sum(nil)[:8]), until
}

// errInvalidObject is wrapped by toEntry's errors: the object is not what the store writes
// (made by hand, or by another version of podcap).
var errInvalidObject = errors.New("invalid CaptureAlert object")

// toEntry converts a CaptureAlert object, copying its maps.
func toEntry(u *unstructured.Unstructured) (*entry, error) {
	spec, _, err := unstructured.NestedMap(u.Object, "spec")
	if err != nil {
		return nil, fmt.Errorf("%w: spec: %v", errInvalidObject, err)
	}
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	a := policy.Alert{
		Fingerprint:  str(spec, "fingerprint"),
		Status:       str(spec, "status"),
		GeneratorURL: str(spec, "generatorURL"),
	}
	if a.Fingerprint != u.GetName() || !validFingerprint(a.Fingerprint) {
		return nil, fmt.Errorf("%w: spec.fingerprint %s does not name the object", errInvalidObject, quote(a.Fingerprint))
	}
	if a.Status != StatusFiring && a.Status != StatusResolved {
		return nil, fmt.Errorf("%w: spec.status %s", errInvalidObject, quote(a.Status))
	}
	if a.Labels, err = stringMap(spec, "labels"); err != nil {
		return nil, err
	}
	if a.Annotations, err = stringMap(spec, "annotations"); err != nil {
		return nil, err
	}
	if a.StartsAt, err = timeField(spec, "startsAt"); err != nil {
		return nil, err
	}
	if a.EndsAt, err = timeField(spec, "endsAt"); err != nil {
		return nil, err
	}
	status, _, _ := unstructured.NestedMap(u.Object, "status")
	last, err := timeField(status, "lastNotifiedAt")
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(a) // map keys sorted: deterministic
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errInvalidObject, err)
	}
	sum := sha256.Sum256(b)
	return &entry{uid: string(u.GetUID()), resourceVersion: u.GetResourceVersion(), alert: a, lastNotified: last,
		hash: string(sum[:])}, nil
}

// stringMap copies the map of strings m[k]; never nil.
func stringMap(m map[string]any, k string) (map[string]string, error) {
	out := map[string]string{}
	raw, ok := m[k].(map[string]any)
	if !ok {
		if m[k] != nil {
			return nil, fmt.Errorf("%w: spec.%s is not an object", errInvalidObject, k)
		}
		return out, nil
	}
	for name, v := range raw {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: spec.%s[%s] is not a string", errInvalidObject, k, quote(name))
		}
		out[name] = s
	}
	return out, nil
}

// timeField parses the RFC 3339 time m[k]; zero when absent.
func timeField(m map[string]any, k string) (time.Time, error) {
	s, _ := m[k].(string)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s: %v", errInvalidObject, k, err)
	}
	return t, nil
}

// Bounds of the informative string fields, as in the CRD's schema. The Decode limits bound
// labels and annotations; these fields are only bounded by the body, so the store cuts them.
const (
	maxGeneratorURLBytes = 4096
	maxReceiverBytes     = 1024
	maxGroupKeyBytes     = 4096
)

// toObject is the CaptureAlert object that records a, as the store applies it: the whole
// object, every field owned by the store's field manager, so an apply without endsAt removes
// an endsAt an earlier apply set.
func toObject(namespace, node string, n Notification, a Alert, now time.Time) *unstructured.Unstructured {
	spec := map[string]any{
		"fingerprint": a.Fingerprint,
		"status":      a.Status,
		"labels":      anyMap(a.Labels),
		"annotations": anyMap(a.Annotations),
		"startsAt":    a.StartsAt.UTC().Format(time.RFC3339Nano),
	}
	if !a.EndsAt.IsZero() {
		spec["endsAt"] = a.EndsAt.UTC().Format(time.RFC3339Nano)
	}
	if a.GeneratorURL != "" {
		spec["generatorURL"] = cut(a.GeneratorURL, maxGeneratorURLBytes)
	}
	if n.Receiver != "" {
		spec["receiver"] = cut(n.Receiver, maxReceiverBytes)
	}
	if n.GroupKey != "" {
		spec["groupKey"] = cut(n.GroupKey, maxGroupKeyBytes)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": captureAlertAPIVersion,
		"kind":       captureAlertKind,
		"metadata":   map[string]any{"name": a.Fingerprint, "namespace": namespace},
		"spec":       spec,
		"status": map[string]any{
			"lastNotifiedAt": now.UTC().Format(time.RFC3339Nano),
			"receivedBy":     node,
		},
	}}
}

func anyMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// cut shortens s to at most max bytes, on a UTF-8 boundary.
func cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8RuneStart(s[max]) {
		max--
	}
	return s[:max]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
