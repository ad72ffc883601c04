package alerts

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"
)

// checkInvariants fails t unless n is what Decode promises for an accepted notification
// under lim (with defaults applied).
func checkInvariants(t *testing.T, n Notification, lim Limits) {
	t.Helper()
	if n.Status != StatusFiring && n.Status != StatusResolved {
		t.Errorf("status %q", n.Status)
	}
	if n.TruncatedAlerts < 0 {
		t.Errorf("truncatedAlerts %d", n.TruncatedAlerts)
	}
	if len(n.Alerts) == 0 || len(n.Alerts) > lim.MaxAlerts {
		t.Errorf("%d alerts, want 1..%d", len(n.Alerts), lim.MaxAlerts)
	}
	seen := map[string]bool{}
	for i, a := range n.Alerts {
		if !validFingerprint(a.Fingerprint) || seen[a.Fingerprint] {
			t.Errorf("alerts[%d].fingerprint %q invalid or repeated", i, a.Fingerprint)
		}
		seen[a.Fingerprint] = true
		if a.Status != StatusFiring && a.Status != StatusResolved {
			t.Errorf("alerts[%d].status %q", i, a.Status)
		}
		if a.StartsAt.IsZero() {
			t.Errorf("alerts[%d].startsAt zero", i)
		}
		if len(a.Labels) == 0 || a.Annotations == nil {
			t.Errorf("alerts[%d]: labels %v, annotations nil %v", i, a.Labels, a.Annotations == nil)
		}
		checkPairs(t, a.Labels, lim.MaxLabels, lim.MaxNameBytes, lim.MaxLabelValueBytes)
		checkPairs(t, a.Annotations, lim.MaxLabels, lim.MaxNameBytes, lim.MaxAnnotationValueBytes)
	}
}

func checkPairs(t *testing.T, m map[string]string, maxPairs, maxName, maxValue int) {
	t.Helper()
	if len(m) > maxPairs {
		t.Errorf("%d pairs, at most %d", len(m), maxPairs)
	}
	for k, v := range m {
		if k == "" || len(k) > maxName || !utf8.ValidString(k) || hasControl(k) {
			t.Errorf("name %q", k)
		}
		if len(v) > maxValue || !utf8.ValidString(v) {
			t.Errorf("value of %q: %d bytes, valid UTF-8 %v", k, len(v), utf8.ValidString(v))
		}
	}
}

// FuzzDecode checks that Decode never panics, fails only with ErrTooLarge or ErrInvalid on
// an in-memory body, and that whatever it accepts satisfies the documented invariants, under
// the default limits and under small ones that the fuzzer can reach.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(amBody))
	f.Add([]byte(`{"version":"4","status":"resolved","alerts":[{"status":"resolved","fingerprint":"0000000000000000","labels":{"a":""},"startsAt":"2026-01-01T00:00:00Z"}]}`))
	small := Limits{MaxBodyBytes: 512, MaxAlerts: 2, MaxLabels: 2, MaxNameBytes: 4, MaxLabelValueBytes: 8, MaxAnnotationValueBytes: 8}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, lim := range []Limits{{}, small} {
			n, err := Decode(bytes.NewReader(body), lim)
			if err != nil {
				if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrInvalid) {
					t.Fatalf("error %v is neither ErrTooLarge nor ErrInvalid", err)
				}
				continue
			}
			checkInvariants(t, n, lim.WithDefaults())
		}
	})
}
