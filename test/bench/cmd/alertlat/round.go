package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/podcap/podcap/agent/alerts"
	"github.com/podcap/podcap/test/bench/internal/poll"
	"github.com/podcap/podcap/test/testbed"
)

// sample is one capture round; durations are milliseconds from t0 (-1: not reached).
type sample struct {
	Kind          string  `json:"kind"` // direct, alertmanager
	Index         int     `json:"i"`
	Start         string  `json:"start"`
	PostMS        float64 `json:"post_ms"`                          // the POST's answer
	NotifyMS      float64 `json:"notify_ms,omitempty"`              // alertmanager: the agent recorded the notification
	FileMS        float64 `json:"file_ms"`                          // the session's first file exists
	PacketMS      float64 `json:"packet_ms"`                        // it holds a packet
	AfterNotifyMS float64 `json:"packet_after_notify_ms,omitempty"` // alertmanager: packet_ms - notify_ms
	StopMS        float64 `json:"stop_ms"`                          // from the resolve's POST to no alert capture running
	Error         string  `json:"error,omitempty"`
}

// round measures one capture, started by a POST to the webhook (direct) or to Alertmanager.
func (b *bench) round(ctx context.Context, kind string, i, seq int) sample {
	s := sample{Kind: kind, Index: i, FileMS: -1, PacketMS: -1, StopMS: -1}
	labels := map[string]string{"alertname": "PodcapBench", "namespace": b.o.namespace, "pod": b.o.pod,
		"bench_run": b.runID, "bench_round": strconv.Itoa(seq)}
	annotations := map[string]string{"podcap_stop_grace": "0s", "podcap_cooldown": "0s"}
	fp := fmt.Sprintf("b0%06x%08x", seq, time.Now().UnixNano()&0xffffffff) // distinct, 16 hex digits
	before, err := sessionDirs(b.podDir)
	if err != nil {
		s.Error = err.Error()
		return s
	}
	t0 := time.Now()
	s.Start = t0.Format(time.RFC3339Nano)
	if kind == "direct" {
		_, err = b.postHook(ctx, []testbed.WebhookAlert{firing(fp, labels, annotations)})
	} else {
		err = testbed.PostAlertmanagerAlerts(ctx, b.o.alertmanager, testbed.Alert{Labels: labels, Annotations: annotations})
	}
	s.PostMS = poll.Millis(t0, time.Now())
	if err != nil {
		s.Error = "post: " + err.Error()
		return s
	}
	s.FileMS, s.PacketMS, err = poll.FirstPacket(t0, b.o.poll, b.o.timeout, func() (bool, bool, error) {
		dirs, err := sessionDirs(b.podDir)
		if err != nil {
			return false, false, err
		}
		for _, d := range dirs {
			if slices.Contains(before, d) {
				continue
			}
			file := filepath.Join(b.podDir, d, "capture-"+b.o.pod+".pcapng0")
			if _, err := os.Stat(file); err != nil {
				return false, false, nil
			}
			return true, pcapngHasPacket(file), nil
		}
		return false, false, nil
	})
	if err != nil {
		s.Error = "first packet: " + err.Error()
	}
	if kind == "alertmanager" {
		if at, afp, err := b.notifiedAt(ctx, labels["bench_round"]); err != nil {
			s.Error = strings.TrimPrefix(s.Error+"; ", "; ") + "notified: " + err.Error()
		} else {
			fp = afp
			s.NotifyMS = poll.Millis(t0, at)
			if s.PacketMS >= 0 {
				s.AfterNotifyMS = s.PacketMS - s.NotifyMS
			}
		}
	}
	// resolve, the same way it fired, and wait until no alert capture runs
	t1 := time.Now()
	if kind == "direct" {
		r := firing(fp, labels, annotations)
		r.Status, r.EndsAt = alerts.StatusResolved, time.Now().UTC()
		_, err = b.postHook(ctx, []testbed.WebhookAlert{r})
	} else {
		err = testbed.PostAlertmanagerAlerts(ctx, b.o.alertmanager,
			testbed.Alert{Labels: labels, Annotations: annotations, EndsAt: time.Now().Add(-time.Second).UTC()})
	}
	if err != nil {
		s.Error = strings.TrimPrefix(s.Error+"; ", "; ") + "resolve: " + err.Error()
		return s
	}
	tStop, err := poll.Until(b.o.poll, b.o.timeout, func() (bool, error) { return b.running(ctx, 0) })
	if err != nil {
		s.Error = strings.TrimPrefix(s.Error+"; ", "; ") + "stop: " + err.Error()
		return s
	}
	s.StopMS = poll.Millis(t1, tStop)
	return s
}

// notifiedAt finds the CaptureAlert of this run's round and returns its status.lastNotifiedAt
// (the agent's clock when it recorded Alertmanager's notification) and fingerprint.
func (b *bench) notifiedAt(ctx context.Context, round string) (time.Time, string, error) {
	var at time.Time
	var fp string
	_, err := poll.Until(10*time.Millisecond, b.o.timeout, func() (bool, error) {
		l, err := b.objects.List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, o := range l.Items {
			if lv, _, _ := unstructured.NestedString(o.Object, "spec", "labels", "bench_round"); lv != round {
				continue
			}
			if lv, _, _ := unstructured.NestedString(o.Object, "spec", "labels", "bench_run"); lv != b.runID {
				continue
			}
			s, _, _ := unstructured.NestedString(o.Object, "status", "lastNotifiedAt")
			if at, err = time.Parse(time.RFC3339Nano, s); err != nil {
				return false, err
			}
			fp = o.GetName()
			return true, nil
		}
		return false, nil
	})
	return at, fp, err
}

// running reports whether exactly want alert captures run (the agent's metric).
func (b *bench) running(ctx context.Context, want float64) (bool, error) {
	v, err := scrape(ctx, b.o.metrics, `podcap_captures_running{source="alert"}`)
	return err == nil && v == want, err
}

func scrape(ctx context.Context, url, series string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s", series, url)
}

// sessionDirs lists the alert-* session directories of the pod.
func sessionDirs(podDir string) ([]string, error) {
	ents, err := os.ReadDir(podDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "alert-") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// pcapngHasPacket reports whether the pcapng file holds a complete packet block.
func pcapngHasPacket(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(bufio.NewReader(f), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		return false
	}
	_, _, err = r.ReadPacketData()
	return err == nil
}
