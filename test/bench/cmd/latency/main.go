// Command latency measures, on a real cluster with a running podcap agent, how long it takes
// from patching a pod's capture annotation to the first packet in the capture file:
//
//	latency -kubeconfig ADMIN -pod bench-traffic -capture-dir DIR [-n 40] [-out latency.jsonl]
//
// Each of -n captures: patch `<key>: "1"` on the pod (t0 is taken just before the PATCH is
// sent), poll DIR/<namespace>/<pod>/capture-<pod>.pcap every -poll until it exists
// (file_ms: the agent's ring created it, which it does once tcpdump's stream header has
// arrived) and until it is larger than the 24-byte pcap header (packet_ms: a packet is in the
// file, visible to any reader), then remove the annotation and poll
// until the pod's capture directory is gone (stop_ms: the agent stopped the capture and
// deleted its files). One JSON object per capture goes to -out and stdout. Every wait is a
// poll with a deadline (-timeout); a capture that misses it is recorded with an error and the
// command exits 1 at the end. The numbers are not judged here: this is a benchmark.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/test/bench/internal/poll"
)

type options struct {
	kubeconfig string
	namespace  string
	pod        string
	dir        string
	key        string
	n          int
	poll       time.Duration
	timeout    time.Duration
	out        string
}

// sample is one capture's measurement; durations are milliseconds from t0.
type sample struct {
	Index    int     `json:"i"`
	Start    string  `json:"start"`              // t0, RFC 3339 with nanoseconds
	PatchMS  float64 `json:"patch_ms"`           // the PATCH's round trip
	FileMS   float64 `json:"file_ms"`            // the capture file exists (maybe still empty)
	PacketMS float64 `json:"packet_ms"`          // the capture file holds a packet (> 24 bytes)
	StopMS   float64 `json:"stop_ms"`            // from the annotation's removal to the directory being gone
	Error    string  `json:"error,omitempty"`    // a deadline missed or an API error
	FileSize int64   `json:"file_size_at_first"` // the file's size when the packet was seen
}

func main() {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig allowed to patch the pod")
	flag.StringVar(&o.namespace, "namespace", "default", "the pod's namespace")
	flag.StringVar(&o.pod, "pod", "", "the pod to capture (it must send traffic steadily)")
	flag.StringVar(&o.dir, "capture-dir", "", "the agent's --capture-dir")
	flag.StringVar(&o.key, "annotation-key", "tcpdump.antrea.io", "the agent's --annotation-key")
	flag.IntVar(&o.n, "n", 100, "number of captures")
	flag.DurationVar(&o.poll, "poll", time.Millisecond, "file poll interval")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline of each wait")
	flag.StringVar(&o.out, "out", "", "append one JSON line per capture to this file")
	flag.Parse()
	if o.pod == "" || o.dir == "" || o.n < 1 {
		fmt.Fprintln(os.Stderr, "latency: -pod, -capture-dir and -n >= 1 are required")
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "latency:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "podcap-bench-latency"
	// client-go's default token bucket (5 requests/s, burst 10) would hold PATCHes back after
	// the first few captures and add its wait to the measurement
	cfg.QPS, cfg.Burst = 1000, 1000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var out *os.File
	if o.out != "" {
		if out, err = os.OpenFile(o.out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return err
		}
		defer out.Close()
	}
	podDir := filepath.Join(o.dir, o.namespace, o.pod)
	file := filepath.Join(podDir, capture.RingFileName(capture.RingBase(o.pod), 1, 0))
	pods := client.CoreV1().Pods(o.namespace)
	patch := func(value any) error {
		body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{o.key: value}}})
		if err != nil {
			return err
		}
		_, err = pods.Patch(ctx, o.pod, types.MergePatchType, body, metav1.PatchOptions{})
		return err
	}
	// a clean start: no annotation, no capture directory
	if err := patch(nil); err != nil {
		return fmt.Errorf("remove annotation: %w", err)
	}
	if _, err := poll.Until(o.poll, o.timeout, func() (bool, error) { return gone(podDir) }); err != nil {
		return fmt.Errorf("capture directory %s still there: %w", podDir, err)
	}
	// warm the client's connection: the first request pays for TLS and discovery
	if _, err := pods.Get(ctx, o.pod, metav1.GetOptions{}); err != nil {
		return err
	}

	failed := 0
	enc := json.NewEncoder(os.Stdout)
	for i := range o.n {
		s := measure(o, i, patch, podDir, file)
		if s.Error != "" {
			failed++
		}
		_ = enc.Encode(s)
		if out != nil {
			if err := json.NewEncoder(out).Encode(s); err != nil {
				return err
			}
		}
		if s.Error != "" && s.StopMS < 0 {
			return fmt.Errorf("capture %d: %s", i, s.Error) // the pod's state is unknown: stop here
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d captures missed a deadline or failed", failed, o.n)
	}
	return nil
}

func measure(o options, i int, patch func(any) error, podDir, file string) sample {
	s := sample{Index: i, FileMS: -1, PacketMS: -1, StopMS: -1}
	t0 := time.Now()
	s.Start = t0.Format(time.RFC3339Nano)
	err := patch("1")
	s.PatchMS = poll.Millis(t0, time.Now())
	if err != nil {
		s.Error = "annotate: " + err.Error()
		return s
	}
	s.FileMS, s.PacketMS, err = poll.FirstPacket(t0, o.poll, o.timeout, func() (bool, bool, error) {
		fi, err := os.Stat(file)
		if errors.Is(err, fs.ErrNotExist) {
			return false, false, nil
		}
		if err != nil {
			return false, false, err
		}
		s.FileSize = fi.Size()
		return true, fi.Size() > 24, nil
	})
	if err != nil {
		s.Error = "first packet: " + err.Error()
	}
	t1 := time.Now()
	if err := patch(nil); err != nil {
		s.Error = "remove annotation: " + err.Error()
		return s
	}
	tGone, err := poll.Until(o.poll, o.timeout, func() (bool, error) { return gone(podDir) })
	if err != nil {
		s.Error = "directory removal: " + err.Error()
		return s
	}
	s.StopMS = poll.Millis(t1, tGone)
	return s
}

func gone(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	return false, err
}
