package alerts

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Bodies the real Alertmanager (Debian's prometheus-alertmanager 0.25.0) posted to a webhook
// receiver (group_wait 0s, send_resolved), captured as they came: alerts added with amtool,
// the second one later resolved by an endsAt in the past. Alertmanager sends endsAt
// "0001-01-01T00:00:00Z" for a firing alert without an end, and an empty generatorURL for
// alerts posted through its API.
func TestDecodeRealAlertmanagerBodies(t *testing.T) {
	read := func(name string) Notification {
		t.Helper()
		f, err := os.Open(filepath.Join("testdata", "alertmanager-0.25", name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		n, err := Decode(f, Limits{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return n
	}
	now := time.Date(2026, 12, 6, 5, 30, 0, 0, time.UTC)

	n := read("one-firing.json")
	if n.Receiver != "podcap" || n.Status != StatusFiring || n.GroupKey != `{}:{namespace="shop"}` || len(n.Alerts) != 1 {
		t.Fatalf("notification %+v", n)
	}
	a := n.Alerts[0]
	if a.Fingerprint != "6427084a5b585be8" || a.Labels["pod"] != "cart-7d9" || a.Annotations["summary"] != "retransmits high" ||
		!a.EndsAt.IsZero() || !a.Active(now) {
		t.Fatalf("alert %+v", a)
	}

	// the group is still firing; its second alert resolved: act on each alert's own status
	n = read("firing-group-one-resolved.json")
	if n.Status != StatusFiring || len(n.Alerts) != 2 {
		t.Fatalf("notification %+v", n)
	}
	if a := n.Alerts[0]; a.Status != StatusFiring || !a.Active(now) {
		t.Fatalf("first alert %+v", a)
	}
	if a := n.Alerts[1]; a.Status != StatusResolved || a.Active(now) || a.Labels["pod"] != "cart-8x1" || a.EndsAt.IsZero() {
		t.Fatalf("resolved alert %+v", a)
	}
}
