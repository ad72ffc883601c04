package main

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
)

// run is one line of capture.jsonl (the fields the report uses).
type run struct {
	Round           int      `json:"round"`
	Load            string   `json:"load"`
	Config          string   `json:"config"`
	Snaplen         *int     `json:"snaplen"`
	Window          float64  `json:"window_s"`
	Loadavg         float64  `json:"loadavg1"`
	Throughput      *float64 `json:"throughput"`
	Unit            string   `json:"throughput_unit"`
	RxPPS           float64  `json:"rx_pps"`
	SentPPS         *float64 `json:"sent_pps"`
	Captured        *float64 `json:"captured"`
	Received        *float64 `json:"received"`
	Dropped         *float64 `json:"dropped"`
	DropPct         *float64 `json:"drop_pct"`
	Unaccounted     *float64 `json:"unaccounted"`
	Drained         *bool    `json:"drained"`
	CPUPct          *float64 `json:"cpu_pct"`
	CPUPctGo        *float64 `json:"cpu_pct_go"`
	FileBytes       *float64 `json:"file_bytes"`
	RingBytes       *float64 `json:"ring_bytes"`
	DevWrittenBytes *float64 `json:"dev_written_bytes"`
	Dev             string   `json:"dev"`
	Error           string   `json:"error"`
}

// row is one line of the capture table: medians across rounds.
type row struct {
	Load             string   `json:"load"`
	Config           string   `json:"config"`
	Snaplen          int      `json:"snaplen,omitempty"`
	Runs             int      `json:"runs"`
	Unit             string   `json:"throughput_unit"`
	Throughput       *float64 `json:"throughput"`
	Ratio            *float64 `json:"throughput_ratio_vs_baseline"`
	RatioMin         *float64 `json:"throughput_ratio_min"`
	RatioMax         *float64 `json:"throughput_ratio_max"`
	PPS              *float64 `json:"rx_pps"`
	DropPct          *float64 `json:"kernel_drop_pct"`
	DropPctMax       *float64 `json:"kernel_drop_pct_max"`
	Captured         *float64 `json:"captured"`
	Received         *float64 `json:"received"`
	Dropped          *float64 `json:"dropped"`
	CPUPct           *float64 `json:"capture_cpu_pct"`
	CPUPctGo         *float64 `json:"capture_cpu_pct_go"`
	DevWrittenMB     *float64 `json:"dev_written_mb"`
	DevWrittenRatio  *float64 `json:"dev_written_vs_baseline_mb"`
	FileBytes        *float64 `json:"ring_file_bytes"`
	RingBytesWritten *float64 `json:"ring_bytes_written"`
	NotDrained       int      `json:"not_drained"`
	Errors           []string `json:"errors,omitempty"`
}

func key(r run) string {
	sl := 0
	if r.Snaplen != nil {
		sl = *r.Snaplen
	}
	return fmt.Sprintf("%s/%s/%d", r.Load, r.Config, sl)
}

func captureRows(runs []run) []row {
	baseline := map[string]run{} // load/round -> baseline run
	for _, r := range runs {
		if r.Config == "none" {
			baseline[fmt.Sprintf("%s/%d", r.Load, r.Round)] = r
		}
	}
	groups := map[string][]run{}
	var order []string
	for _, r := range runs {
		k := key(r)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	slices.SortStableFunc(order, func(a, b string) int { return rank(groups[a][0]) - rank(groups[b][0]) })
	var rows []row
	for _, k := range order {
		g := groups[k]
		first := g[0]
		rw := row{Load: first.Load, Config: first.Config, Runs: len(g), Unit: first.Unit}
		if first.Snaplen != nil {
			rw.Snaplen = *first.Snaplen
		}
		var tp, ratio, pps, drop, capd, recv, dropped, cpu, cpuGo, dev, devBase, files, ring []float64
		for _, r := range g {
			if r.Error != "" {
				rw.Errors = append(rw.Errors, fmt.Sprintf("round %d: %s", r.Round, r.Error))
			}
			if r.Drained != nil && !*r.Drained {
				rw.NotDrained++
			}
			add(&tp, r.Throughput)
			pps = append(pps, r.RxPPS)
			add(&drop, r.DropPct)
			add(&capd, r.Captured)
			add(&recv, r.Received)
			add(&dropped, r.Dropped)
			add(&cpu, r.CPUPct)
			add(&cpuGo, r.CPUPctGo)
			add(&dev, r.DevWrittenBytes)
			add(&files, r.FileBytes)
			add(&ring, r.RingBytes)
			b, ok := baseline[fmt.Sprintf("%s/%d", r.Load, r.Round)]
			if ok && b.Throughput != nil && r.Throughput != nil && *b.Throughput > 0 {
				ratio = append(ratio, *r.Throughput / *b.Throughput)
			}
			if ok && b.DevWrittenBytes != nil {
				devBase = append(devBase, *b.DevWrittenBytes)
			}
		}
		rw.Throughput, rw.PPS = median(tp), median(pps)
		if first.Config != "none" {
			rw.Ratio = median(ratio)
			if len(ratio) > 0 {
				rw.RatioMin, rw.RatioMax = ptr(slices.Min(ratio)), ptr(slices.Max(ratio))
			}
			rw.DevWrittenRatio = scale(median(devBase), 1e-6)
		}
		rw.DropPct = median(drop)
		if len(drop) > 0 {
			rw.DropPctMax = ptr(slices.Max(drop))
		}
		rw.Captured, rw.Received, rw.Dropped = median(capd), median(recv), median(dropped)
		rw.CPUPct, rw.CPUPctGo = median(cpu), median(cpuGo)
		rw.DevWrittenMB = scale(median(dev), 1e-6)
		rw.FileBytes, rw.RingBytesWritten = median(files), median(ring)
		rows = append(rows, rw)
	}
	return rows
}

// rank orders the table: loads as run, then baseline, tcpdump-ring, pipeline, native; full
// snaplen first.
func rank(r run) int {
	n := 0
	if r.Load == "tcp1" {
		n += 100
	}
	switch r.Config {
	case "tcpdump-ring":
		n += 10
	case "pipeline":
		n += 20
	case "native":
		n += 30
	}
	if r.Snaplen != nil && *r.Snaplen < 262144 {
		n += 50
	}
	return n
}

func add(xs *[]float64, v *float64) {
	if v != nil && !math.IsNaN(*v) {
		*xs = append(*xs, *v)
	}
}

// writeCapture writes part A's table: one row per load, capture and snaplen; then the load
// average the runs started at, the errors and the runs that did not drain.
func writeCapture(w *bytes.Buffer, rows []row, loadavg *pct, meta map[string]any) {
	fmt.Fprintf(w, "### A. Capture cost (medians over rounds; ratio = capture / no-capture baseline of the same round)\n\n")
	fmt.Fprintln(w, "| load | capture | -s | delivered | vs baseline (min–max) | kernel drops (max) | captured / received | capture CPU (Go part) | block dev written (baseline) | ring files / written |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		sl := "–"
		if r.Config != "none" {
			sl = fmt.Sprint(r.Snaplen)
			if r.Snaplen == 262144 {
				sl = "full"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Load, r.Config, sl, delivered(r), ratioCell(r), dropCell(r), capturedCell(r), cpuCell(r), devCell(r), ringCell(r))
	}
	fmt.Fprintln(w)
	if loadavg != nil {
		fmt.Fprintf(w, "- 1-min load average when the runs started: median %.1f (%.1f–%.1f) on %s: background load moves the baselines\n",
			loadavg.P50, loadavg.Min, loadavg.Max, cpus(meta))
	}
	if h := nativeHeadline(rows); h != "" {
		fmt.Fprintf(w, "- kernel drops at full snaplen (median), tcpdump pipeline → native: %s\n", h)
	}
	for _, r := range rows {
		for _, e := range r.Errors {
			fmt.Fprintf(w, "- error %s %s -s %d: %s\n", r.Load, r.Config, r.Snaplen, e)
		}
		if r.NotDrained > 0 {
			fmt.Fprintf(w, "- %s %s -s %d: %d run(s) not drained within the deadline\n", r.Load, r.Config, r.Snaplen, r.NotDrained)
		}
	}
}

func delivered(r row) string {
	if r.Unit == "Gbit/s" {
		return f(r.Throughput, "%.2f Gbit/s") + " (" + f(scale(r.PPS, 1e-3), "%.0fk pps") + ")"
	}
	return f(scale(r.Throughput, 1e-3), "%.0fk pps")
}

func ratioCell(r row) string {
	if r.Config == "none" {
		return "1"
	}
	return f(r.Ratio, "%.2f") + " (" + f(r.RatioMin, "%.2f") + "–" + f(r.RatioMax, "%.2f") + ")"
}

func dropCell(r row) string {
	if r.Config == "none" {
		return "–"
	}
	return f(r.DropPct, "%.1f%%") + " (" + f(r.DropPctMax, "%.1f%%") + ")"
}

func capturedCell(r row) string {
	if r.Config == "none" {
		return "–"
	}
	return count(r.Captured) + " / " + count(r.Received)
}

func count(v *float64) string {
	switch {
	case v == nil:
		return "–"
	case *v >= 1e6:
		return fmt.Sprintf("%.2fM", *v/1e6)
	case *v >= 1e3:
		return fmt.Sprintf("%.0fk", *v/1e3)
	}
	return fmt.Sprintf("%.0f", *v)
}

func cpuCell(r row) string {
	if r.Config == "none" {
		return "–"
	}
	s := f(r.CPUPct, "%.0f%%")
	if r.CPUPctGo != nil {
		s += " (" + f(r.CPUPctGo, "%.0f%%") + ")"
	}
	return s
}

func devCell(r row) string {
	s := f(r.DevWrittenMB, "%.1f MB")
	if r.Config != "none" {
		s += " (" + f(r.DevWrittenRatio, "%.1f") + ")"
	}
	return s
}

func ringCell(r row) string {
	if r.Config == "none" {
		return "–"
	}
	s := f(scale(r.FileBytes, 1e-6), "%.1f MB")
	if r.RingBytesWritten != nil {
		s += " / " + f(scale(r.RingBytesWritten, 1e-6), "%.0f MB")
	}
	return strings.TrimSpace(s)
}

// nativeHeadline is issue 8's comparison: per load, the full-snaplen kernel drops of the
// tcpdump pipeline and of the native engine ("" if the run had no native rows).
func nativeHeadline(rows []row) string {
	drops := map[string]*float64{} // load/config
	var loads []string
	for _, r := range rows {
		if r.Snaplen != 262144 || (r.Config != "pipeline" && r.Config != "native") {
			continue
		}
		if !slices.Contains(loads, r.Load) {
			loads = append(loads, r.Load)
		}
		drops[r.Load+"/"+r.Config] = r.DropPct
	}
	var parts []string
	for _, l := range loads {
		n, ok := drops[l+"/native"]
		if !ok {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %s → %s", l, f(drops[l+"/pipeline"], "%.1f%%"), f(n, "%.1f%%")))
	}
	return strings.Join(parts, ", ")
}
