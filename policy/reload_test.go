package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
)

// reasonPolicy captures every pod with the given reason.
func reasonPolicy(reason string) string {
	return fmt.Sprintf("package podcap\n\ndecision := {\"capture\": true, \"reason\": %q}\n", reason)
}

const brokenPolicy = "package podcap\n\ndecision := {\"capture\": true\n"

// engineWithChanges is an engine on dir whose OnChange reports versions on the channel.
func engineWithChanges(t *testing.T, dir string, interval time.Duration, now func() time.Time) (*Engine, chan string) {
	t.Helper()
	logger, _ := ktesting.NewTestContext(t)
	changes := make(chan string, 16)
	e, err := New(Options{Dir: dir, Logger: logger, PollInterval: interval, Now: now,
		OnChange: func(v string) { changes <- v }})
	if err != nil {
		t.Fatal(err)
	}
	return e, changes
}

func reason(t *testing.T, e *Engine) string {
	t.Helper()
	r, err := e.Decide(context.Background(), podInput("shop", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	return r.Decision.Reason
}

func TestReloadKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("one")})
	clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e, changes := engineWithChanges(t, dir, 0, func() time.Time { return clock })
	v1 := e.Version()
	if st := e.Status(); !st.LastReloadSuccessful || !st.LastSuccess.Equal(clock) || st.Version != v1 {
		t.Fatalf("status = %+v", st)
	}

	// broken, edited in place: the error is reported, the last good policy stays
	clock = clock.Add(time.Minute)
	writeFiles(t, dir, map[string]string{"p.rego": brokenPolicy})
	err := e.Reload()
	if err == nil || !strings.Contains(err.Error(), "rego_parse_error") {
		t.Fatalf("Reload = %v, want a parse error", err)
	}
	st := e.Status()
	if st.LastReloadSuccessful || !strings.Contains(st.LastError, "p.rego:") || st.Version != v1 ||
		!st.LastSuccess.Equal(clock.Add(-time.Minute)) || e.Version() != v1 || reason(t, e) != "one" {
		t.Fatalf("after a broken reload: status %+v, version %s", st, e.Version())
	}

	// fixed: flips back, new version, OnChange
	clock = clock.Add(time.Minute)
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("two")})
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	st = e.Status()
	if !st.LastReloadSuccessful || st.LastError != "" || st.Version == v1 || !st.LastSuccess.Equal(clock) || reason(t, e) != "two" {
		t.Fatalf("after the fix: status %+v", st)
	}
	if v := <-changes; v != st.Version {
		t.Errorf("OnChange(%s), want %s", v, st.Version)
	}

	// the same content again: a successful reload, no change
	if err := e.Reload(); err != nil || e.Version() != st.Version || len(changes) != 0 {
		t.Errorf("Reload of the same files: %v, version %s, %d changes", err, e.Version(), len(changes))
	}
}

// TestBrokenAtStart: the engine starts without a policy and loads the fixed one.
func TestBrokenAtStart(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": brokenPolicy})
	e, changes := engineWithChanges(t, dir, 0, nil)
	if st := e.Status(); st.LastReloadSuccessful || st.Version != "" || e.Version() != "" {
		t.Fatalf("status = %+v", st)
	}
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("fixed")})
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if v := <-changes; v != e.Version() || reason(t, e) != "fixed" {
		t.Errorf("OnChange(%s), version %s", v, e.Version())
	}
}

// TestRunConfigMapUpdates: Run follows the kubelet's ..data swaps: a changed file, a broken
// one (reported once, the last good policy stays), a fixed one, an added and a removed one.
func TestRunConfigMapUpdates(t *testing.T) {
	c := newConfigMapDir(t, map[string]string{"p.rego": reasonPolicy("one")})
	e, changes := engineWithChanges(t, c.dir, 5*time.Millisecond, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	wait := func(want string) {
		t.Helper()
		select {
		case v := <-changes:
			if got := reason(t, e); v != e.Version() || got != want {
				t.Fatalf("OnChange(%s): version %s, reason %q, want %q", v, e.Version(), got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no reload to %q; status %+v", want, e.Status())
		}
	}
	c.update(map[string]string{"p.rego": reasonPolicy("two")})
	wait("two")

	c.update(map[string]string{"p.rego": brokenPolicy})
	deadline := time.Now().Add(5 * time.Second)
	for e.Status().LastReloadSuccessful {
		if time.Now().After(deadline) {
			t.Fatal("the broken policy was not noticed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if reason(t, e) != "two" {
		t.Fatal("the last good policy is gone")
	}

	c.update(map[string]string{"p.rego": reasonPolicy("three")})
	wait("three")

	c.update(map[string]string{
		"p.rego": "package podcap\n\ndecision := {\"capture\": true, \"reason\": r}\n",
		"r.rego": "package podcap\n\nr := \"four\"\n",
	})
	wait("four")
	if st := e.Status(); len(st.Files) != 2 {
		t.Errorf("files = %v", st.Files)
	}
	c.update(map[string]string{"p.rego": reasonPolicy("five")})
	wait("five")
	if st := e.Status(); len(st.Files) != 1 || !st.LastReloadSuccessful {
		t.Errorf("status = %+v", st)
	}
}

// TestRunInPlaceEdit: plain files edited in place, as the integration tests do.
func TestRunInPlaceEdit(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("one")})
	e, changes := engineWithChanges(t, dir, 5*time.Millisecond, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = e.Run(ctx) }()

	f, err := os.OpenFile(filepath.Join(dir, "p.rego"), os.O_WRONLY|os.O_TRUNC, 0)
	must(t, err)
	_, err = f.WriteString(reasonPolicy("edited"))
	must(t, err)
	must(t, f.Close())
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatalf("edit not picked up; status %+v", e.Status())
	}
	if got := reason(t, e); got != "edited" {
		t.Errorf("reason %q", got)
	}
}

// TestConcurrentDecideDuringReload: decisions stay consistent with the version that made
// them while reloads swap the policy (run with -race).
func TestConcurrentDecideDuringReload(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("a")})
	logger, _ := ktesting.NewTestContext(t)
	var changes atomic.Int32
	// a generous evaluation bound: four deciders and a reloader on a loaded CI machine under
	// -race took more than the 1 s default (what this test checks is the swap, not the bound)
	e, err := New(Options{Dir: dir, Logger: logger, EvalTimeout: time.Minute, OnChange: func(string) { changes.Add(1) }})
	must(t, err)
	versions := map[string]string{e.Version(): "a"}
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("b")})
	must(t, e.Reload())
	versions[e.Version()] = "b"

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			in := podInput("shop", nil, nil)
			for ctx.Err() == nil {
				r, err := e.Decide(ctx, in)
				if err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
				if err == nil && r.Decision.Reason != versions[r.Version] {
					errs <- fmt.Errorf("version %s decided %q", r.Version, r.Decision.Reason)
					return
				}
			}
		})
	}
	for i := range 20 {
		writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy(string(rune('a' + i%2)))})
		if err := e.Reload(); err != nil {
			t.Error(err)
		}
		_ = e.Status()
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := changes.Load(); n != 21 { // b, then a, b, a, ...
		t.Errorf("%d changes, want 21", n)
	}
}
