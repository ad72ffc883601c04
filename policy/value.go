package policy

import (
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Value is the input as an OPA value, the same document as the input's JSON encoding
// (TestValueMatchesJSON holds them equal). Building it directly skips the JSON round trip
// that rego.EvalInput makes for every evaluation (BenchmarkInputConversion).
func (in Input) Value() ast.Value {
	alerts := make([]*ast.Term, len(in.Alerts))
	for i, a := range in.Alerts {
		alerts[i] = ast.ObjectTerm(
			item("fingerprint", ast.StringTerm(a.Fingerprint)),
			item("status", ast.StringTerm(a.Status)),
			item("labels", stringMap(a.Labels)),
			item("annotations", stringMap(a.Annotations)),
			item("startsAt", timeTerm(a.StartsAt)),
			item("endsAt", timeTerm(a.EndsAt)),
			item("generatorURL", ast.StringTerm(a.GeneratorURL)),
		)
	}
	p := in.Pod
	return ast.NewObject(
		item("node", ast.StringTerm(in.Node)),
		item("now", timeTerm(in.Now)),
		item("pod", ast.ObjectTerm(
			item("namespace", ast.StringTerm(p.Namespace)),
			item("name", ast.StringTerm(p.Name)),
			item("uid", ast.StringTerm(p.UID)),
			item("labels", stringMap(p.Labels)),
			item("annotations", stringMap(p.Annotations)),
			item("phase", ast.StringTerm(p.Phase)),
			item("hostNetwork", ast.BooleanTerm(p.HostNetwork)),
			item("ip", ast.StringTerm(p.IP)),
			item("owner", ast.ObjectTerm(
				item("kind", ast.StringTerm(p.Owner.Kind)),
				item("name", ast.StringTerm(p.Owner.Name)),
			)),
		)),
		item("alerts", ast.ArrayTerm(alerts...)),
		item("manual", ast.ObjectTerm(
			item("requested", ast.BooleanTerm(in.Manual.Requested)),
			item("files", ast.IntNumberTerm(in.Manual.Files)),
			item("error", ast.StringTerm(in.Manual.Error)),
		)),
		item("limits", ast.ObjectTerm(
			item("max_duration_seconds", ast.IntNumberTerm(int(in.Limits.MaxDurationSeconds))),
			item("max_files", ast.IntNumberTerm(in.Limits.MaxFiles)),
			item("max_file_size_bytes", ast.IntNumberTerm(int(in.Limits.MaxFileSizeBytes))),
		)),
	)
}

func item(key string, v *ast.Term) [2]*ast.Term { return ast.Item(ast.StringTerm(key), v) }

// stringMap is m as an object; an empty object for nil, as encoding/json would not do: the
// Go types keep maps non-nil (BuildInput) so that both encodings agree.
func stringMap(m map[string]string) *ast.Term {
	o := ast.NewObjectWithCapacity(len(m))
	for k, v := range m {
		o.Insert(ast.StringTerm(k), ast.StringTerm(v))
	}
	return ast.NewTerm(o)
}

// timeTerm is t as encoding/json writes it: RFC 3339 with nanoseconds, trailing zeros dropped.
func timeTerm(t time.Time) *ast.Term { return ast.StringTerm(t.Format(time.RFC3339Nano)) }
