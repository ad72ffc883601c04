package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/podcap/podcap/test/testbed"
)

// blastResult is one blast configuration.
type blastResult struct {
	Kind        string  `json:"kind"` // blast
	Batch       int     `json:"batch"`
	Concurrency int     `json:"concurrency"`
	Alerts      int     `json:"alerts"`
	Requests    int     `json:"requests"`
	Retries503  int64   `json:"retries_503"`
	Recorded    int64   `json:"recorded"`
	Refused     int64   `json:"refused"`
	Seconds     float64 `json:"seconds"`
	AlertsPerS  float64 `json:"alerts_per_s"`
	Error       string  `json:"error,omitempty"`
}

func parseConfig(c string) (batch, conc int, err error) {
	l, r, ok := strings.Cut(strings.TrimSpace(c), "x")
	if batch, err = strconv.Atoi(l); !ok || err != nil || batch < 1 || batch > 200 {
		return 0, 0, fmt.Errorf("blast config %q: want BxC, B from 1 to 200", c)
	}
	if conc, err = strconv.Atoi(r); err != nil || conc < 1 {
		return 0, 0, fmt.Errorf("blast config %q: want BxC, C ≥ 1", c)
	}
	return batch, conc, nil
}

// blastOnce posts b.o.blast distinct alerts that name no pod, batch per notification, conc at
// once, and measures how many a second the agent records.
func (b *bench) blastOnce(ctx context.Context, ci, batch, conc int) blastResult {
	r := blastResult{Kind: "blast", Batch: batch, Concurrency: conc, Alerts: b.o.blast}
	var notes [][]testbed.WebhookAlert
	for i := 0; i < b.o.blast; i += batch {
		var as []testbed.WebhookAlert
		for j := i; j < min(i+batch, b.o.blast); j++ {
			labels := map[string]string{"alertname": "PodcapBlast", "instance": fmt.Sprintf("host-%05d", j), "bench_run": b.runID,
				"blast": strconv.Itoa(ci)}
			as = append(as, firing(fmt.Sprintf("bb%02x%012x", ci, j), labels, map[string]string{"summary": "blast"}))
		}
		notes = append(notes, as)
	}
	r.Requests = len(notes)
	work := make(chan []testbed.WebhookAlert)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for as := range work {
				deadline := time.Now().Add(time.Minute)
				for {
					res, err := b.postHook(ctx, as)
					if err == nil {
						atomic.AddInt64(&r.Recorded, int64(res.Recorded))
						atomic.AddInt64(&r.Refused, int64(res.Refused))
						break
					}
					if errors.Is(err, errUnavailable) && time.Now().Before(deadline) {
						atomic.AddInt64(&r.Retries503, 1)
						time.Sleep(100 * time.Millisecond) // Alertmanager backs off ≥ 0.5 s; this is kinder to the count
						continue
					}
					firstErr.CompareAndSwap(nil, err.Error())
					break
				}
			}
		})
	}
	for _, as := range notes {
		work <- as
	}
	close(work)
	wg.Wait()
	r.Seconds = time.Since(start).Seconds()
	r.AlertsPerS = float64(r.Recorded) / r.Seconds
	if e, ok := firstErr.Load().(string); ok {
		r.Error = e
	}
	return r
}
