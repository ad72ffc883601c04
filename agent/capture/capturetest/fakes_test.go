package capturetest_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/capturetest"
)

func TestEngine(t *testing.T) {
	e := capturetest.NewEngine(nil)
	ctx := context.Background()
	src, err := e.Open(ctx, capture.Target{PID: 7}, capture.SourceOptions{Filter: "tcp"})
	if err != nil {
		t.Fatal(err)
	}
	if src.Snaplen() != capture.DefaultSnaplen {
		t.Errorf("snaplen %d", src.Snaplen())
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := src.ReadPacket() // held: blocks until Close
		done <- err
	}()
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Errorf("ReadPacket after Close: %v", err)
	}
	boom := errors.New("boom")
	e.SetErr(boom)
	if _, err := e.Open(ctx, capture.Target{PID: 8}, capture.SourceOptions{}); !errors.Is(err, boom) {
		t.Errorf("Open with SetErr: %v", err)
	}
	if opens := e.Opens(); len(opens) != 2 || opens[0].Target.PID != 7 || opens[0].Options.Filter != "tcp" || opens[1].Target.PID != 8 {
		t.Errorf("Opens() = %+v", opens)
	}
	if got := e.Sources(); len(got) != 1 || !got[0].Closed() {
		t.Errorf("Sources() = %v", got)
	}
}

func TestResolver(t *testing.T) {
	r := capturetest.NewResolver()
	ctx := context.Background()
	if _, err := r.Resolve(ctx, "ns", "a", ""); !errors.Is(err, capture.ErrPodNotFound) {
		t.Errorf("unknown pod: %v", err)
	}
	r.Set("ns", "a", capture.Target{PID: 42})
	if tg, err := r.Resolve(ctx, "ns", "a", ""); err != nil || tg.PID != 42 {
		t.Errorf("Resolve = %+v, %v", tg, err)
	}
	boom := errors.New("boom")
	r.SetErr("ns", "a", boom)
	if _, err := r.Resolve(ctx, "ns", "a", ""); !errors.Is(err, boom) {
		t.Errorf("SetErr: %v", err)
	}
	if r.Calls() != 3 {
		t.Errorf("Calls() = %d", r.Calls())
	}
}
