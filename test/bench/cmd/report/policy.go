package main

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// policyBench is one line of policy.jsonl (policy.sh): the medians over the runs of one Go
// benchmark at one GOMAXPROCS.
type policyBench struct {
	Package        string             `json:"package"`
	Benchmark      string             `json:"benchmark"`
	GOMAXPROCS     int                `json:"gomaxprocs"`
	Parallel       bool               `json:"parallel"`
	DecisionsPerOp int                `json:"decisions_per_op"`
	Runs           int                `json:"runs"`
	Benchtime      string             `json:"benchtime"`
	NsPerOp        float64            `json:"ns_per_op"`
	NsPerOpMin     float64            `json:"ns_per_op_min"`
	NsPerOpMax     float64            `json:"ns_per_op_max"`
	DecisionsPerS  float64            `json:"decisions_per_s"`
	BytesPerOp     *float64           `json:"bytes_per_op"`
	AllocsPerOp    *float64           `json:"allocs_per_op"`
	Metrics        map[string]float64 `json:"metrics"`
	Loadavg1       float64            `json:"loadavg1"`
}

// policyRow is one line of the "Policy decisions" table: one benchmark at every GOMAXPROCS.
type policyRow struct {
	Name      string       `json:"name"`
	Package   string       `json:"package"`
	Benchmark string       `json:"benchmark"`
	Unit      string       `json:"unit"` // of the time cells: "op" or "node" (110 pods)
	Reference bool         `json:"reference,omitempty"`
	Cells     []policyCell `json:"by_gomaxprocs"`
}

type policyCell struct {
	GOMAXPROCS int     `json:"gomaxprocs"`
	Runs       int     `json:"runs"`
	NsPerOp    float64 `json:"ns_per_op"`
	NsPerOpMin float64 `json:"ns_per_op_min"`
	NsPerOpMax float64 `json:"ns_per_op_max"`
	MS         float64 `json:"ms_per_op"`
	// DecisionsPerS is decisions per op × 1e9 / ns_per_op, the median over the runs: all of the
	// benchmark's goroutines together (one, except the parallel benchmark's GOMAXPROCS).
	DecisionsPerS        float64  `json:"decisions_per_s"`
	DecisionsPerSPerCore *float64 `json:"decisions_per_s_per_core,omitempty"` // GOMAXPROCS=1, or parallel
	ReloadMS             *float64 `json:"reload_ms,omitempty"`
	AllocsPerOp          *float64 `json:"allocs_per_op,omitempty"`
	BytesPerOp           *float64 `json:"bytes_per_op,omitempty"`
}

type policySummary struct {
	GOMAXPROCS []int       `json:"gomaxprocs"`
	Benchtime  string      `json:"benchtime"`
	Runs       int         `json:"runs"`
	Rows       []policyRow `json:"rows"`
	Loadavg    *pct        `json:"loadavg1_at_go_test_start,omitempty"`
	Missing    []string    `json:"missing,omitempty"` // benchmarks of the table without results
}

// policyTable lists the rows of the table: the four, then policy/'s engine-only
// benchmarks for comparison.
var policyTable = []struct {
	name, pkg, bench, unit string
	reference              bool
}{
	{"engine Decide, uncached", "policy", "Decide", "op", false},
	{"sync, uncached (decision cache miss)", "agent", "PolicySyncUncached", "op", false},
	{"sync, cached (unchanged pod: cache hit)", "agent", "PolicySyncCached", "op", false},
	{"110-pod re-evaluation after a policy change (ms)", "agent", "PolicyReevaluate110Pods", "node", false},
	{"engine Decide, one goroutine per GOMAXPROCS", "policy", "DecideParallel", "op", true},
	{"engine only: 110 Decides", "policy", "Reevaluate110Pods/reload=false", "node", true},
	{"engine only: Reload + 110 Decides", "policy", "Reevaluate110Pods/reload=true", "node", true},
}

func policyStats(benches []policyBench) *policySummary {
	if len(benches) == 0 {
		return nil
	}
	s := &policySummary{}
	var la []float64
	for _, b := range benches {
		if !slices.Contains(s.GOMAXPROCS, b.GOMAXPROCS) {
			s.GOMAXPROCS = append(s.GOMAXPROCS, b.GOMAXPROCS)
		}
		s.Benchtime, s.Runs = b.Benchtime, max(s.Runs, b.Runs)
		la = append(la, b.Loadavg1)
	}
	slices.Sort(s.GOMAXPROCS)
	p := stats(la)
	s.Loadavg = &p
	for _, t := range policyTable {
		r := policyRow{Name: t.name, Package: t.pkg, Benchmark: "Benchmark" + t.bench, Unit: t.unit, Reference: t.reference}
		for _, procs := range s.GOMAXPROCS {
			i := slices.IndexFunc(benches, func(b policyBench) bool {
				return b.Package == t.pkg && b.Benchmark == t.bench && b.GOMAXPROCS == procs
			})
			if i < 0 {
				continue
			}
			b := benches[i]
			c := policyCell{GOMAXPROCS: procs, Runs: b.Runs, NsPerOp: b.NsPerOp, NsPerOpMin: b.NsPerOpMin, NsPerOpMax: b.NsPerOpMax,
				MS: b.NsPerOp / 1e6, DecisionsPerS: b.DecisionsPerS, AllocsPerOp: b.AllocsPerOp, BytesPerOp: b.BytesPerOp}
			switch {
			case procs == 1:
				c.DecisionsPerSPerCore = ptr(b.DecisionsPerS)
			case b.Parallel:
				c.DecisionsPerSPerCore = ptr(b.DecisionsPerS / float64(procs))
			}
			if v, ok := b.Metrics["reload-ms"]; ok {
				c.ReloadMS = ptr(v)
			}
			r.Cells = append(r.Cells, c)
		}
		if len(r.Cells) == 0 {
			s.Missing = append(s.Missing, t.pkg+" "+r.Benchmark)
			continue
		}
		s.Rows = append(s.Rows, r)
	}
	return s
}

func writePolicy(w *bytes.Buffer, s *policySummary, meta map[string]any) {
	fmt.Fprintf(w, "\n### C. Policy decisions: the shipped rules/ (medians of %d runs of -benchtime %s; range in brackets)\n\n", s.Runs, s.Benchtime)
	head := []string{"measurement", "Go benchmark"}
	for _, p := range s.GOMAXPROCS {
		if p == 1 {
			head = append(head, "GOMAXPROCS=1: time", "decisions/s per core")
		} else {
			head = append(head, fmt.Sprintf("GOMAXPROCS=%d: time", p), "decisions/s")
		}
	}
	head = append(head, "allocs/op")
	table := func(reference bool) {
		fmt.Fprintln(w, "| "+strings.Join(head, " | ")+" |")
		fmt.Fprintln(w, strings.Repeat("|---", len(head))+"|")
		for _, r := range s.Rows {
			if r.Reference != reference {
				continue
			}
			cells := []string{r.Name, r.Package + " " + r.Benchmark}
			var allocs *float64
			for _, p := range s.GOMAXPROCS {
				i := slices.IndexFunc(r.Cells, func(c policyCell) bool { return c.GOMAXPROCS == p })
				if i < 0 {
					cells = append(cells, "–", "–")
					continue
				}
				c := r.Cells[i]
				cells = append(cells, timeCell(c), decisionsCell(r, c))
				if allocs == nil {
					allocs = c.AllocsPerOp
				}
			}
			if allocs != nil {
				cells = append(cells, thousands(*allocs))
			} else {
				cells = append(cells, "–")
			}
			fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
		}
	}
	table(false)
	if slices.ContainsFunc(s.Rows, func(r policyRow) bool { return r.Reference }) {
		fmt.Fprintf(w, "\nThe engine alone, for comparison:\n\n")
		table(true)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "- decisions/s = decisions per op × 1e9 / ns per op (110 per op for the node rows: pods/s). At GOMAXPROCS=1 that is the rate of one core; above, a single-goroutine row is still one goroutine (the runtime's GC may use the other cores), the re-evaluation runs the controller's 2 workers, and the one-goroutine-per-GOMAXPROCS row is the node's total (per core in brackets).")
	fmt.Fprintln(w, "- sync = the controller's sync of one typical pod that the rules capture (pod input, evaluation, validation, fake filter checker and capture manager); a miss is forced by moving the injected clock past the decision cache's TTL. Re-evaluation = from Reload of an edited policy file (read, compile, prepare, OnChange → EnqueueAll) until the workers synced all 110 pods with the new version; reload = until Reload returned.")
	if s.Loadavg != nil {
		fmt.Fprintf(w, "- 1-min load average when each go test started: median %.1f (%.1f–%.1f) on %s: background load slows the runs\n",
			s.Loadavg.P50, s.Loadavg.Min, s.Loadavg.Max, cpus(meta))
	}
	for _, m := range s.Missing {
		fmt.Fprintf(w, "- no result for %s\n", m)
	}
}

func timeCell(c policyCell) string {
	s := duration(c.NsPerOp) + " (" + durationIn(c.NsPerOpMin, c.NsPerOp) + "–" + durationIn(c.NsPerOpMax, c.NsPerOp) + ")"
	if c.ReloadMS != nil {
		s += fmt.Sprintf(", reload %.2f ms", *c.ReloadMS)
	}
	return s
}

func decisionsCell(r policyRow, c policyCell) string {
	s := thousands(c.DecisionsPerS)
	if r.Unit == "node" {
		s += " pods/s"
	}
	if c.GOMAXPROCS != 1 && c.DecisionsPerSPerCore != nil {
		s += " (" + thousands(*c.DecisionsPerSPerCore) + " per core)"
	}
	return s
}

// duration formats ns in the unit that suits it.
func duration(ns float64) string { return durationIn(ns, ns) + " " + unit(ns) }

// durationIn formats ns in the unit that suits ref, without the unit.
func durationIn(ns, ref float64) string {
	switch {
	case ref >= 1e6:
		return strconv.FormatFloat(ns/1e6, 'f', 2, 64)
	case ref >= 1e3:
		return strconv.FormatFloat(ns/1e3, 'f', 1, 64)
	}
	return strconv.FormatFloat(ns, 'f', 0, 64)
}

func unit(ns float64) string {
	switch {
	case ns >= 1e6:
		return "ms"
	case ns >= 1e3:
		return "µs"
	}
	return "ns"
}

// thousands formats v rounded, with commas between groups of three digits.
func thousands(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString(",")
		}
		b.WriteRune(r)
	}
	return b.String()
}
