package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
)

// Each failed check is logged once, as an error entry with the check's error, how long the
// agent waited and what to check; the report ends when the check succeeds.
func TestReportUntilReady(t *testing.T) {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	calls := 0
	down := errors.New("connection refused")
	reportUntilReady(t.Context(), logger, time.Millisecond, 2*time.Millisecond, func(context.Context) error {
		if calls++; calls <= 3 {
			return down
		}
		return nil
	}, "Waiting for the thing", "check", "--flag")
	entries := logger.GetSink().(ktesting.Underlier).GetBuffer().Data()
	if calls != 4 || len(entries) != 3 {
		t.Fatalf("%d checks, log %+v; want 4 checks and 3 entries", calls, entries)
	}
	for _, e := range entries {
		kv := fmt.Sprint(e.ParameterKVList)
		if e.Type != ktesting.LogError || e.Message != "Waiting for the thing" || !errors.Is(e.Err, down) ||
			!strings.Contains(kv, "waited") || !strings.Contains(kv, "check --flag") {
			t.Errorf("entry %+v (%s)", e, kv)
		}
	}
}

// The report ends with its context, without a last entry.
func TestReportUntilReadyStops(t *testing.T) {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		reportUntilReady(ctx, logger, time.Hour, time.Hour, func(context.Context) error { return errors.New("down") }, "Waiting")
	}()
	cancel()
	<-done
	if entries := logger.GetSink().(ktesting.Underlier).GetBuffer().Data(); len(entries) != 0 {
		t.Fatalf("log %+v, want none", entries)
	}
}
