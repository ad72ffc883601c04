package main

import (
	"bytes"
	"fmt"
	"slices"
)

// streamRun is one line of stream.jsonl (part E; the fields the report uses).
type streamRun struct {
	Round         int       `json:"round"`
	Load          string    `json:"load"`
	Config        string    `json:"config"`  // pipeline (tcpdump engine) or native
	Variant       string    `json:"variant"` // none, r1, r10, metrics
	Readers       int       `json:"readers"`
	Scrape        *string   `json:"scrape_interval"`
	Loadavg       float64   `json:"loadavg1"`
	Throughput    *float64  `json:"throughput"`
	Unit          string    `json:"throughput_unit"`
	RxPPS         float64   `json:"rx_pps"`
	Captured      *float64  `json:"captured"`
	CapturedPPS   *float64  `json:"captured_pps"`
	DropPct       *float64  `json:"drop_pct"`
	Drained       *bool     `json:"drained"`
	CPUPct        *float64  `json:"cpu_pct"`
	StreamReaders *float64  `json:"stream_readers"`
	StreamCut     *float64  `json:"stream_cut"`
	ReaderPackets *float64  `json:"reader_packets"`
	ReaderCPUPct  *float64  `json:"reader_cpu_pct"`
	Scrapes       *float64  `json:"metrics_scrapes"`
	ScrapeErrors  *float64  `json:"scrape_errors"`
	ScrapeMeanMS  *float64  `json:"scrape_mean_ms"`
	ScrapeMaxMS   *float64  `json:"scrape_max_ms"`
	ScrapeBytes   *float64  `json:"scrape_bytes"`
	Error         string    `json:"error"`
	EachPackets   []float64 `json:"reader_packets_each"`
}

// streamRow is one line of part E's table: medians across rounds, ratios against the same
// engine's no-reader run of the same round and load.
type streamRow struct {
	Load        string   `json:"load"`
	Engine      string   `json:"engine"`
	Variant     string   `json:"variant"`
	Runs        int      `json:"runs"`
	Unit        string   `json:"throughput_unit"`
	Throughput  *float64 `json:"throughput"`
	TPRatio     *float64 `json:"throughput_ratio_vs_none"`
	TPRatioMin  *float64 `json:"throughput_ratio_min"`
	TPRatioMax  *float64 `json:"throughput_ratio_max"`
	CapturedPPS *float64 `json:"captured_pps"`
	CapRatio    *float64 `json:"captured_ratio_vs_none"`
	CapRatioMin *float64 `json:"captured_ratio_min"`
	CapRatioMax *float64 `json:"captured_ratio_max"`
	DropPct     *float64 `json:"kernel_drop_pct"`
	DropPctMax  *float64 `json:"kernel_drop_pct_max"`
	CPUPct      *float64 `json:"capture_cpu_pct"`
	CPURatio    *float64 `json:"capture_cpu_ratio_vs_none"`
	ReaderCPU   *float64 `json:"reader_cpu_pct"`
	Readers     int      `json:"readers_total"` // over the runs
	Cut         int      `json:"readers_cut_total"`
	// PerReader: packets a reader got (median over rounds of the run's mean); Delivered:
	// reader packets / (captured × readers), median over rounds.
	PerReader    *float64 `json:"reader_packets_per_reader"`
	Delivered    *float64 `json:"delivered_to_readers_ratio"`
	Scrapes      *float64 `json:"scrapes"`
	ScrapeMeanMS *float64 `json:"scrape_mean_ms"`
	ScrapeMaxMS  *float64 `json:"scrape_max_ms"`
	ScrapeBytes  *float64 `json:"scrape_bytes"`
	ScrapeErrors int      `json:"scrape_errors"`
	NotDrained   int      `json:"not_drained"`
	Errors       []string `json:"errors,omitempty"`
}

func streamRows(runs []streamRun) []streamRow {
	base := map[string]streamRun{} // load/engine/round -> no-reader run
	bkey := func(r streamRun) string { return fmt.Sprintf("%s/%s/%d", r.Load, r.Config, r.Round) }
	for _, r := range runs {
		if r.Variant == "none" {
			base[bkey(r)] = r
		}
	}
	groups := map[string][]streamRun{}
	var order []string
	for _, r := range runs {
		k := r.Load + "/" + r.Config + "/" + r.Variant
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	slices.SortStableFunc(order, func(a, b string) int { return streamRank(groups[a][0]) - streamRank(groups[b][0]) })
	ratio := func(xs *[]float64, v, b *float64) {
		if v != nil && b != nil && *b > 0 {
			*xs = append(*xs, *v / *b)
		}
	}
	var rows []streamRow
	for _, k := range order {
		g := groups[k]
		first := g[0]
		rw := streamRow{Load: first.Load, Engine: first.Config, Variant: first.Variant, Runs: len(g), Unit: first.Unit}
		var tp, tpr, capd, capr, drop, cpu, cpur, rcpu, per, deliv, scr, smean, smax, sbytes []float64
		for _, r := range g {
			if r.Error != "" {
				rw.Errors = append(rw.Errors, fmt.Sprintf("round %d: %s", r.Round, r.Error))
			}
			if r.Drained != nil && !*r.Drained {
				rw.NotDrained++
			}
			add(&tp, r.Throughput)
			add(&capd, r.CapturedPPS)
			add(&drop, r.DropPct)
			add(&cpu, r.CPUPct)
			add(&rcpu, r.ReaderCPUPct)
			if b, ok := base[bkey(r)]; ok && r.Variant != "none" {
				ratio(&tpr, r.Throughput, b.Throughput)
				ratio(&capr, r.CapturedPPS, b.CapturedPPS)
				ratio(&cpur, r.CPUPct, b.CPUPct)
			}
			if r.Readers > 0 {
				rw.Readers += r.Readers
				if r.StreamCut != nil {
					rw.Cut += int(*r.StreamCut)
				}
				if r.ReaderPackets != nil {
					per = append(per, *r.ReaderPackets/float64(r.Readers))
					if r.Captured != nil && *r.Captured > 0 {
						deliv = append(deliv, *r.ReaderPackets/(*r.Captured*float64(r.Readers)))
					}
				}
			}
			if r.Variant == "metrics" {
				add(&scr, r.Scrapes)
				add(&smean, r.ScrapeMeanMS)
				add(&smax, r.ScrapeMaxMS)
				add(&sbytes, r.ScrapeBytes)
				if r.ScrapeErrors != nil {
					rw.ScrapeErrors += int(*r.ScrapeErrors)
				}
			}
		}
		rw.Throughput, rw.CapturedPPS, rw.CPUPct, rw.ReaderCPU = median(tp), median(capd), median(cpu), median(rcpu)
		rw.TPRatio, rw.TPRatioMin, rw.TPRatioMax = medianRange(tpr)
		rw.CapRatio, rw.CapRatioMin, rw.CapRatioMax = medianRange(capr)
		rw.CPURatio = median(cpur)
		rw.DropPct = median(drop)
		if len(drop) > 0 {
			rw.DropPctMax = ptr(slices.Max(drop))
		}
		rw.PerReader, rw.Delivered = median(per), median(deliv)
		rw.Scrapes, rw.ScrapeMeanMS, rw.ScrapeBytes = median(scr), median(smean), median(sbytes)
		if len(smax) > 0 {
			rw.ScrapeMaxMS = ptr(slices.Max(smax))
		}
		rows = append(rows, rw)
	}
	return rows
}

func medianRange(xs []float64) (m, lo, hi *float64) {
	if len(xs) == 0 {
		return nil, nil, nil
	}
	return median(xs), ptr(slices.Min(xs)), ptr(slices.Max(xs))
}

// streamRank orders part E's table: loads as run, engines tcpdump then native, then none,
// 1 reader, 10 readers, metrics.
func streamRank(r streamRun) int {
	n := 0
	if r.Load == "tcp1" {
		n += 100
	}
	if r.Config == "native" {
		n += 10
	}
	switch r.Variant {
	case "r1":
		n++
	case "r10":
		n += 2
	case "metrics":
		n += 3
	}
	return n
}

func engineName(c string) string {
	if c == "pipeline" {
		return "tcpdump"
	}
	return c
}

func variantName(r streamRow) string {
	switch r.Variant {
	case "none":
		return "none"
	case "r1":
		return "1 reader"
	case "r10":
		return "10 readers"
	case "metrics":
		return "metrics, scraped"
	}
	return r.Variant
}

// writeStream writes part E's table, then the scrapes, the load average, errors and runs
// that did not drain.
func writeStream(w *bytes.Buffer, rows []streamRow, loadavg *pct, meta map[string]any) {
	fmt.Fprintf(w, "\n### E. Live streams and metrics (full snaplen; medians over rounds; ratio = run / the same engine without readers in the same round)\n\n")
	fmt.Fprintln(w, "| load | engine | readers / metrics | delivered | vs none (min–max) | captured | vs none (min–max) | kernel drops (max) | capture CPU (vs none) | readers cut | packets per reader (of captured) | reader process CPU |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		var dl string
		if r.Unit == "Gbit/s" {
			dl = f(r.Throughput, "%.2f Gbit/s")
		} else {
			dl = f(scale(r.Throughput, 1e-3), "%.0fk pps")
		}
		tpr, capr, cpur, cut, per, rcpu := "1", "1", "", "–", "–", "–"
		if r.Variant != "none" {
			tpr = f(r.TPRatio, "%.2f") + " (" + f(r.TPRatioMin, "%.2f") + "–" + f(r.TPRatioMax, "%.2f") + ")"
			capr = f(r.CapRatio, "%.2f") + " (" + f(r.CapRatioMin, "%.2f") + "–" + f(r.CapRatioMax, "%.2f") + ")"
			cpur = " (" + f(r.CPURatio, "×%.2f") + ")"
			rcpu = f(r.ReaderCPU, "%.0f%%")
		}
		if r.Readers > 0 {
			cut = fmt.Sprintf("%d of %d", r.Cut, r.Readers)
			per = count(r.PerReader) + " (" + f(scale(r.Delivered, 100), "%.0f%%") + ")"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s pkt/s | %s | %s | %s%s | %s | %s | %s |\n",
			r.Load, engineName(r.Engine), variantName(r), dl, tpr, count(r.CapturedPPS), capr,
			f(r.DropPct, "%.1f%%")+" ("+f(r.DropPctMax, "%.1f%%")+")", f(r.CPUPct, "%.0f%%"), cpur, cut, per, rcpu)
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		if r.Variant == "metrics" {
			fmt.Fprintf(w, "- %s %s metrics: %s scrapes a run (median), %s ms mean (max %s ms), %s bytes each, %d failed\n",
				r.Load, engineName(r.Engine), f(r.Scrapes, "%.0f"), f(r.ScrapeMeanMS, "%.1f"), f(r.ScrapeMaxMS, "%.1f"),
				f(r.ScrapeBytes, "%.0f"), r.ScrapeErrors)
		}
	}
	if loadavg != nil {
		fmt.Fprintf(w, "- 1-min load average when the runs started: median %.1f (%.1f–%.1f) on %s\n",
			loadavg.P50, loadavg.Min, loadavg.Max, cpus(meta))
	}
	for _, r := range rows {
		for _, e := range r.Errors {
			fmt.Fprintf(w, "- error %s %s %s: %s\n", r.Load, engineName(r.Engine), r.Variant, e)
		}
		if r.NotDrained > 0 {
			fmt.Fprintf(w, "- %s %s %s: %d run(s) not drained within the deadline\n", r.Load, engineName(r.Engine), r.Variant, r.NotDrained)
		}
	}
}
