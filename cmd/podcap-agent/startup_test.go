package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
	testingclock "k8s.io/utils/clock/testing"
)

// Each failed check is logged once, as an error entry with the check's error, how long the
// agent waited and what to check, one back-off step after the previous one (5 s, doubling,
// at most a minute: waited 5s, 15s, 35s, 1m15s, 2m15s, 3m15s); the report ends when the check
// succeeds. The clock is the test's: each step is stepped, never slept.
func TestReportUntilReady(t *testing.T) {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	clk := testingclock.NewFakeClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	var calls atomic.Int32
	down := errors.New("connection refused")
	done := make(chan struct{})
	go func() {
		defer close(done)
		reportUntilReady(t.Context(), logger, clk, reportFirstStep, reportMaxStep, func(context.Context) error {
			if calls.Add(1) <= 6 {
				return down
			}
			return nil
		}, "Waiting for the thing", "check", "--flag")
	}()
	steps := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute, time.Minute}
	for i, step := range steps {
		waitUntil(t, "the report's timer", clk.HasWaiters)
		clk.Step(step - time.Millisecond)
		if calls.Load() != int32(i) {
			t.Fatalf("check %d ran before its step of %s", i+1, step)
		}
		clk.Step(time.Millisecond)
		waitUntil(t, fmt.Sprintf("check %d", i+1), func() bool { return calls.Load() == int32(i+1) })
	}
	<-done
	entries := logger.GetSink().(ktesting.Underlier).GetBuffer().Data()
	waited := []string{"5s", "15s", "35s", "1m15s", "2m15s", "3m15s"}
	if len(entries) != len(waited) {
		t.Fatalf("log %+v; want %d entries", entries, len(waited))
	}
	for i, e := range entries {
		kv := fmt.Sprint(e.ParameterKVList)
		if e.Type != ktesting.LogError || e.Message != "Waiting for the thing" || !errors.Is(e.Err, down) ||
			!strings.Contains(kv, "waited "+waited[i]+" ") || !strings.Contains(kv, "check --flag") {
			t.Errorf("entry %d: %+v (%s), want waited %s", i, e, kv, waited[i])
		}
	}
}

// waitUntil polls cond until it holds, failing the test after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// The report ends with its context, without a last entry.
func TestReportUntilReadyStops(t *testing.T) {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		reportUntilReady(ctx, logger, testingclock.NewFakeClock(time.Now()), time.Hour, time.Hour, func(context.Context) error { return errors.New("down") }, "Waiting")
	}()
	cancel()
	<-done
	if entries := logger.GetSink().(ktesting.Underlier).GetBuffer().Data(); len(entries) != 0 {
		t.Fatalf("log %+v, want none", entries)
	}
}
