// Command report summarises a test/bench run: it reads capture.jsonl (one object per load
// run, from capture.sh), latency.jsonl (one object per capture, from cmd/latency),
// policy.jsonl (one object per Go benchmark and GOMAXPROCS, medians, from policy.sh),
// alerts.jsonl (one object per alert round or blast, from cmd/alertlat), stream.jsonl (part E:
// one object per load run, from capture.sh's stream part), alerts-meta.json and
// meta.json from -dir, prints the summary tables (Markdown) on stdout and writes them with
// the numbers behind them to -dir/summary.md and -dir/summary.json.
//
// Capture rows are medians across rounds. The throughput ratio of a capture is computed per
// round against the baseline (no capture) of the same round and load, then the median of
// those ratios is taken. Latency percentiles are nearest-rank (p99 of fewer than 100 samples
// is the maximum).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
)

// sample is one line of latency.jsonl.
type sample struct {
	PatchMS  float64 `json:"patch_ms"`
	FileMS   float64 `json:"file_ms"`
	PacketMS float64 `json:"packet_ms"`
	StopMS   float64 `json:"stop_ms"`
	Error    string  `json:"error"`
}

type latency struct {
	N        int      `json:"n"`
	Failed   int      `json:"failed"`
	PacketMS pct      `json:"first_packet_ms"`
	FileMS   pct      `json:"file_ms"`
	PatchMS  pct      `json:"patch_ms"`
	StopMS   pct      `json:"stop_ms"`
	Errors   []string `json:"errors,omitempty"`
}

type pct struct {
	Min float64 `json:"min"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type summary struct {
	Meta    json.RawMessage `json:"meta,omitempty"`
	Capture []row           `json:"capture"`
	Loadavg *pct            `json:"loadavg1_at_run_start,omitempty"` // of the capture runs
	Latency *latency        `json:"latency,omitempty"`
	// LatencyNative is part B on the native engine (latency-native.jsonl)
	LatencyNative *latency       `json:"latency_native,omitempty"`
	Policy        *policySummary `json:"policy,omitempty"`
	Alerts        *alertsSummary `json:"alerts,omitempty"`
	Stream        []streamRow    `json:"stream,omitempty"`
	// StreamLoadavg is the 1-min load average at the start of part E's runs.
	StreamLoadavg *pct `json:"stream_loadavg1_at_run_start,omitempty"`
}

func main() {
	dir := flag.String("dir", "", "the bench run's results directory")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "report: -dir is required")
		os.Exit(2)
	}
	if err := report(*dir, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func report(dir string, w io.Writer) error {
	var s summary
	if b, err := os.ReadFile(filepath.Join(dir, "meta.json")); err == nil {
		s.Meta = b
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	runs, err := readLines[run](filepath.Join(dir, "capture.jsonl"))
	if err != nil {
		return err
	}
	s.Capture = captureRows(runs)
	if len(runs) > 0 {
		la := make([]float64, len(runs))
		for i, r := range runs {
			la[i] = r.Loadavg
		}
		p := stats(la)
		s.Loadavg = &p
	}
	for name, l := range map[string]**latency{"latency.jsonl": &s.Latency, "latency-native.jsonl": &s.LatencyNative} {
		samples, err := readLines[sample](filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if len(samples) > 0 {
			*l = latencyStats(samples)
		}
	}
	benches, err := readLines[policyBench](filepath.Join(dir, "policy.jsonl"))
	if err != nil {
		return err
	}
	s.Policy = policyStats(benches)
	alertLines, err := readLines[alertLine](filepath.Join(dir, "alerts.jsonl"))
	if err != nil {
		return err
	}
	alertsMeta, err := os.ReadFile(filepath.Join(dir, "alerts-meta.json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	s.Alerts = alertsStats(alertLines, alertsMeta)
	streamRuns, err := readLines[streamRun](filepath.Join(dir, "stream.jsonl"))
	if err != nil {
		return err
	}
	if len(streamRuns) > 0 {
		s.Stream = streamRows(streamRuns)
		la := make([]float64, len(streamRuns))
		for i, r := range streamRuns {
			la[i] = r.Loadavg
		}
		p := stats(la)
		s.StreamLoadavg = &p
	}
	var md bytes.Buffer
	writeMarkdown(&md, s)
	if _, err := w.Write(md.Bytes()); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "summary.json"), append(js, '\n'), 0o644)
}

// readLines decodes one JSON object per line; a missing file is no lines.
func readLines[T any](path string) ([]T, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out = append(out, v)
	}
	return out, sc.Err()
}

func ptr(v float64) *float64 { return &v }

func scale(v *float64, f float64) *float64 {
	if v == nil {
		return nil
	}
	return ptr(*v * f)
}

func median(xs []float64) *float64 {
	if len(xs) == 0 {
		return nil
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return ptr(s[n/2])
	}
	return ptr((s[n/2-1] + s[n/2]) / 2)
}

// nearest-rank percentile of sorted s
func percentile(s []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func stats(xs []float64) pct {
	if len(xs) == 0 {
		return pct{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return pct{Min: s[0], P50: percentile(s, 0.5), P90: percentile(s, 0.9), P99: percentile(s, 0.99), Max: s[len(s)-1]}
}

func latencyStats(samples []sample) *latency {
	l := &latency{N: len(samples)}
	var packet, file, patch, stop []float64
	for _, s := range samples {
		if s.Error != "" {
			l.Failed++
			l.Errors = append(l.Errors, s.Error)
		}
		if s.PacketMS >= 0 {
			packet = append(packet, s.PacketMS)
		}
		if s.FileMS >= 0 {
			file = append(file, s.FileMS)
		}
		patch = append(patch, s.PatchMS)
		if s.StopMS >= 0 {
			stop = append(stop, s.StopMS)
		}
	}
	l.PacketMS, l.FileMS, l.PatchMS, l.StopMS = stats(packet), stats(file), stats(patch), stats(stop)
	return l
}

func writeMarkdown(w *bytes.Buffer, s summary) {
	var meta map[string]any
	_ = json.Unmarshal(s.Meta, &meta)
	fmt.Fprintf(w, "## podcap bench\n\n")
	if meta != nil {
		keys := make([]string, 0, len(meta))
		for k := range meta {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "- %s: %v\n", k, meta[k])
		}
		fmt.Fprintln(w)
	}
	if len(s.Capture) > 0 {
		writeCapture(w, s.Capture, s.Loadavg, meta)
	}
	for _, b := range []struct {
		l              *latency
		engine, opened string
	}{{s.Latency, "tcpdump", "tcpdump running"}, {s.LatencyNative, "native", "socket bound"}} {
		if l := b.l; l != nil {
			writeSteps(w, fmt.Sprintf("B. Annotation patch → first packet on disk, %s engine (%d captures, %d failed; ms; nearest-rank percentiles)", b.engine, l.N, l.Failed),
				"step (from the PATCH being sent)", []step{
					{"PATCH answered", l.PatchMS},
					{"capture file created (" + b.opened + ")", l.FileMS},
					{"**first packet on disk (file > 24 B)**", l.PacketMS},
					{"annotation removed → directory gone", l.StopMS},
				}, l.Errors)
		}
	}
	if s.Policy != nil {
		writePolicy(w, s.Policy, meta)
	}
	if s.Alerts != nil {
		writeAlerts(w, s.Alerts)
	}
	if len(s.Stream) > 0 {
		writeStream(w, s.Stream, s.StreamLoadavg, meta)
	}
}

// step is a row of a table of times: what was reached, and its percentiles (ms).
type step struct {
	name string
	p    pct
}

// writeSteps writes the Markdown section title: a table of steps (first names its first
// column) with their percentiles, then a line per error.
func writeSteps(w *bytes.Buffer, title, first string, steps []step, errs []string) {
	fmt.Fprintf(w, "\n### %s\n\n", title)
	fmt.Fprintf(w, "| %s | min | p50 | p90 | p99 | max |\n", first)
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, s := range steps {
		fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", s.name, s.p.Min, s.p.P50, s.p.P90, s.p.P99, s.p.Max)
	}
	for _, e := range errs {
		fmt.Fprintf(w, "- error: %s\n", e)
	}
}

func cpus(meta map[string]any) string {
	if c, ok := meta["cpus"].(string); ok {
		return c
	}
	return "this machine"
}

func f(v *float64, format string) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf(format, *v)
}
