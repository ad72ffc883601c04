package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
	"k8s.io/klog/v2"
)

// typicalInput is a Deployment's pod with the labels and annotations such pods carry, and
// the label the shipped rules capture on.
func typicalInput(i int) Input {
	pod := testPod()
	pod.Name = fmt.Sprintf("web-7d9f8c6b5-%05d", i)
	pod.Labels = map[string]string{
		"app.kubernetes.io/name": "web", "app.kubernetes.io/instance": "web-prod",
		"app.kubernetes.io/version": "1.4.2", "pod-template-hash": "7d9f8c6b5", "team": "shop",
	}
	if i%10 == 0 {
		pod.Labels["podcap.io/capture"] = "true"
	}
	pod.Annotations = map[string]string{
		"kubectl.kubernetes.io/restartedAt": "2026-02-28T10:00:00Z",
		"prometheus.io/scrape":              "true", "prometheus.io/port": "9090",
	}
	return BuildInput(pod, "node-1", testNow, Manual{}, nil, Limits{})
}

func benchEngine(b *testing.B) *Engine {
	b.Helper()
	e, err := New(Options{Dir: rulesDir, Logger: klog.Background().V(10)})
	if err != nil {
		b.Fatal(err)
	}
	if st := e.Status(); !st.LastReloadSuccessful {
		b.Fatal(st.LastError)
	}
	return e
}

// BenchmarkDecide: one decision of the shipped rules for a typical pod (uncached: the agent
// caches decisions by pod, policy and alert versions, so a cached one costs a map lookup).
func BenchmarkDecide(b *testing.B) {
	e := benchEngine(b)
	in := typicalInput(0)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Decide(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkDecideParallel: the same from GOMAXPROCS goroutines sharing the engine.
func BenchmarkDecideParallel(b *testing.B) {
	e := benchEngine(b)
	in := typicalInput(0)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.Decide(ctx, in); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkReevaluate110Pods: what a policy change costs a full node (110 pods, the kubelet's
// default maximum): the reload (read, compile, prepare), then one decision per pod.
func BenchmarkReevaluate110Pods(b *testing.B) {
	e := benchEngine(b)
	ins := make([]Input, 110)
	for i := range ins {
		ins[i] = typicalInput(i)
	}
	ctx := context.Background()
	for _, reload := range []bool{false, true} {
		b.Run(fmt.Sprintf("reload=%v", reload), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if reload {
					if err := e.Reload(); err != nil {
						b.Fatal(err)
					}
				}
				for _, in := range ins {
					if _, err := e.Decide(ctx, in); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/node")
		})
	}
}

// BenchmarkInputConversion compares the ways of handing the input to OPA: the Go struct
// (rego.EvalInput converts it through JSON each time), a generic map (no JSON, but OPA's
// reflection), and the ast.Value built by Input.Value (what Decide does).
func BenchmarkInputConversion(b *testing.B) {
	files, err := readDir(rulesDir, false)
	if err != nil {
		b.Fatal(err)
	}
	c, err := compile(files)
	if err != nil {
		b.Fatal(err)
	}
	pq, err := prepareQuery(c, query)
	if err != nil {
		b.Fatal(err)
	}
	in := typicalInput(0)
	var generic any
	raw, _ := json.Marshal(in)
	_ = json.Unmarshal(raw, &generic)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		opt  func() rego.EvalOption
	}{
		{"EvalInput(struct)", func() rego.EvalOption { return rego.EvalInput(in) }},
		{"EvalInput(map)", func() rego.EvalOption { return rego.EvalInput(generic) }},
		{"EvalParsedInput(Value)", func() rego.EvalOption { return rego.EvalParsedInput(in.Value()) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pq.Eval(ctx, bc.opt()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkQueryShape compares one query reading both values through comprehensions (what
// Decide does), the whole package data.podcap, and two prepared queries.
func BenchmarkQueryShape(b *testing.B) {
	files, err := readDir(rulesDir, false)
	if err != nil {
		b.Fatal(err)
	}
	c, err := compile(files)
	if err != nil {
		b.Fatal(err)
	}
	prep := func(q string) *rego.PreparedEvalQuery {
		pq, err := prepareQuery(c, q)
		if err != nil {
			b.Fatal(err)
		}
		return pq
	}
	ctx := context.Background()
	in := typicalInput(0)
	for _, bc := range []struct {
		name    string
		queries []*rego.PreparedEvalQuery
	}{
		{"comprehensions", []*rego.PreparedEvalQuery{prep(query)}},
		{"data.podcap", []*rego.PreparedEvalQuery{prep("data.podcap")}},
		{"two queries", []*rego.PreparedEvalQuery{prep("data.podcap.decision"), prep("data.podcap.manual_allowed")}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v := in.Value()
				for _, pq := range bc.queries {
					if _, err := pq.Eval(ctx, rego.EvalParsedInput(v)); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
