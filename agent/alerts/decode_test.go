package alerts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// amBody is a notification laid out as Alertmanager 0.25's webhook sends it (compact JSON,
// its field order): a group still firing although one of its two alerts has resolved.
const amBody = `{"receiver":"podcap","status":"firing","alerts":[` +
	`{"status":"firing","labels":{"alertname":"HighLatency","namespace":"shop","pod":"web-7d9c6b5f4-x2k8p","severity":"page"},` +
	`"annotations":{"runbook_url":"https://runbooks.example/HighLatency","summary":"p99 latency over 500ms"},` +
	`"startsAt":"2026-12-06T05:00:00.123456789Z","endsAt":"0001-01-01T00:00:00Z",` +
	`"generatorURL":"http://prometheus:9090/graph?g0.expr=histogram_quantile%280.99%29\u0026g0.tab=1","fingerprint":"8d7a6f3c2b1e0a94"},` +
	`{"status":"resolved","labels":{"alertname":"HighLatency","namespace":"shop","pod":"web-7d9c6b5f4-q9z7m","severity":"page"},` +
	`"annotations":{"summary":"p99 latency over 500ms"},` +
	`"startsAt":"2026-12-06T04:50:00Z","endsAt":"2026-12-06T05:10:00Z",` +
	`"generatorURL":"http://prometheus:9090/graph?g0.expr=histogram_quantile%280.99%29\u0026g0.tab=1","fingerprint":"0f1e2d3c4b5a6978"}],` +
	`"groupLabels":{"alertname":"HighLatency"},"commonLabels":{"alertname":"HighLatency","namespace":"shop","severity":"page"},` +
	`"commonAnnotations":{"summary":"p99 latency over 500ms"},"externalURL":"http://alertmanager:9093",` +
	`"version":"4","groupKey":"{}:{alertname=\"HighLatency\"}","truncatedAlerts":0}`

// body returns amBody as JSON after mutate has changed its decoded form.
func body(t testing.TB, mutate func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(amBody), &m); err != nil {
		t.Fatal(err)
	}
	mutate(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// alert0 returns the first alert of a decoded amBody, for a mutation.
func alert0(m map[string]any) map[string]any {
	return m["alerts"].([]any)[0].(map[string]any)
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestDecodeAlertmanagerBody(t *testing.T) {
	n, err := Decode(strings.NewReader(amBody), Limits{})
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	checkInvariants(t, n, Limits{}.WithDefaults())
	if n.Receiver != "podcap" || n.Status != StatusFiring || n.GroupKey != `{}:{alertname="HighLatency"}` || n.TruncatedAlerts != 0 {
		t.Errorf("notification = %+v", n)
	}
	if len(n.Alerts) != 2 {
		t.Fatalf("got %d alerts, want 2", len(n.Alerts))
	}
	a, r := n.Alerts[0], n.Alerts[1]
	if a.Fingerprint != "8d7a6f3c2b1e0a94" || a.Status != StatusFiring || a.Labels["pod"] != "web-7d9c6b5f4-x2k8p" ||
		a.Annotations["summary"] != "p99 latency over 500ms" || !a.EndsAt.IsZero() ||
		!a.StartsAt.Equal(mustTime(t, "2026-12-06T05:00:00.123456789Z")) ||
		a.GeneratorURL != "http://prometheus:9090/graph?g0.expr=histogram_quantile%280.99%29&g0.tab=1" {
		t.Errorf("alerts[0] = %+v", a)
	}
	if r.Status != StatusResolved || !r.EndsAt.Equal(mustTime(t, "2026-12-06T05:10:00Z")) {
		t.Errorf("alerts[1] = %+v", r)
	}
	// The group fires; only the alert that fires is active.
	now := mustTime(t, "2026-12-06T05:11:00Z")
	if !a.Active(now) || r.Active(now) {
		t.Errorf("Active: alerts[0] %v alerts[1] %v, want true false", a.Active(now), r.Active(now))
	}
}

func TestDecodeToleratesUnknownFields(t *testing.T) {
	b := body(t, func(m map[string]any) {
		m["orgId"] = 1
		m["future"] = map[string]any{"nested": []any{1, "x", nil}}
		a := alert0(m)
		a["silenceURL"] = "http://am/silence"
		a["values"] = map[string]any{"A": 1.5}
		delete(a, "annotations")
		delete(a, "generatorURL")
		delete(a, "endsAt")
		delete(m, "groupLabels")
		delete(m, "commonLabels")
		delete(m, "externalURL")
	})
	n, err := Decode(bytes.NewReader(b), Limits{})
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	checkInvariants(t, n, Limits{}.WithDefaults())
	if n.Alerts[0].Annotations == nil || len(n.Alerts[0].Annotations) != 0 {
		t.Errorf("annotations = %#v, want empty and not nil", n.Alerts[0].Annotations)
	}
}

func TestDecodeRejects(t *testing.T) {
	setAlert := func(k string, v any) func(map[string]any) {
		return func(m map[string]any) { alert0(m)[k] = v }
	}
	tests := []struct {
		name   string
		body   []byte
		want   string // in the error's text
		wantIs error  // besides ErrInvalid
	}{
		{name: "empty body", body: []byte(""), want: "empty body"},
		{name: "not JSON", body: []byte("receiver=podcap"), want: "malformed JSON at byte 1: invalid character"},
		{name: "JSON array", body: []byte(`[]`), want: "body: JSON array where an object is expected"},
		{name: "truncated", body: []byte(amBody[:len(amBody)-1]), want: "truncated JSON"},
		{name: "trailing object", body: []byte(amBody + `{}`), want: "data after the JSON object"},
		{name: "trailing garbage", body: []byte(amBody + ` x`), want: "data after the JSON object"},
		{name: "invalid UTF-8", body: []byte(strings.Replace(amBody, "shop", "sh\xffp", 1)), want: "not valid UTF-8"},
		{name: "wrong type", body: body(t, func(m map[string]any) { m["truncatedAlerts"] = "0" }), want: "truncatedAlerts: JSON string where an integer is expected"},
		{name: "alerts not an array", body: body(t, func(m map[string]any) { m["alerts"] = map[string]any{} }), want: "alerts: JSON object where an array is expected"},
		{name: "fractional truncatedAlerts", body: body(t, func(m map[string]any) { m["truncatedAlerts"] = 1.5 }), want: "truncatedAlerts: JSON number 1.5 where an integer is expected"},
		{name: "version missing", body: body(t, func(m map[string]any) { delete(m, "version") }), want: `version "", want "4"`, wantIs: ErrVersion},
		{name: "version 3", body: body(t, func(m map[string]any) { m["version"] = "3" }), want: `version "3", want "4"`, wantIs: ErrVersion},
		{name: "version number", body: body(t, func(m map[string]any) { m["version"] = 4 }), want: "version: JSON number where a string is expected"},
		{name: "group status", body: body(t, func(m map[string]any) { m["status"] = "pending" }), want: `status "pending"`},
		{name: "negative truncatedAlerts", body: body(t, func(m map[string]any) { m["truncatedAlerts"] = -1 }), want: "truncatedAlerts -1"},
		{name: "alerts missing", body: body(t, func(m map[string]any) { delete(m, "alerts") }), want: "alerts missing or empty"},
		{name: "alerts empty", body: body(t, func(m map[string]any) { m["alerts"] = []any{} }), want: "alerts missing or empty"},
		{name: "alerts null", body: body(t, func(m map[string]any) { m["alerts"] = nil }), want: "alerts missing or empty"},
		{name: "fingerprint missing", body: body(t, func(m map[string]any) { delete(alert0(m), "fingerprint") }), want: `alerts[0].fingerprint ""`},
		{name: "fingerprint uppercase", body: body(t, setAlert("fingerprint", "8D7A6F3C2B1E0A94")), want: "alerts[0].fingerprint"},
		{name: "fingerprint short", body: body(t, setAlert("fingerprint", "8d7a6f3c2b1e0a9")), want: "alerts[0].fingerprint"},
		{name: "fingerprint long", body: body(t, setAlert("fingerprint", "8d7a6f3c2b1e0a940")), want: "alerts[0].fingerprint"},
		{name: "fingerprint not hex", body: body(t, setAlert("fingerprint", "8d7a6f3c2b1e0a9g")), want: "alerts[0].fingerprint"},
		{name: "fingerprint repeated", body: body(t, func(m map[string]any) {
			m["alerts"].([]any)[1].(map[string]any)["fingerprint"] = alert0(m)["fingerprint"]
		}), want: "alerts[1].fingerprint 8d7a6f3c2b1e0a94 repeats alerts[0]"},
		{name: "alert status missing", body: body(t, func(m map[string]any) { delete(alert0(m), "status") }), want: `alerts[0].status ""`},
		{name: "alert status", body: body(t, setAlert("status", "Firing")), want: `alerts[0].status "Firing"`},
		{name: "startsAt missing", body: body(t, func(m map[string]any) { delete(alert0(m), "startsAt") }), want: "alerts[0].startsAt missing"},
		{name: "startsAt zero", body: body(t, setAlert("startsAt", "0001-01-01T00:00:00Z")), want: "alerts[0].startsAt missing"},
		{name: "startsAt not RFC 3339", body: body(t, setAlert("startsAt", "yesterday")), want: "yesterday"},
		{name: "labels missing", body: body(t, func(m map[string]any) { delete(alert0(m), "labels") }), want: "alerts[0].labels missing or empty"},
		{name: "labels empty", body: body(t, setAlert("labels", map[string]any{})), want: "alerts[0].labels missing or empty"},
		{name: "label value not a string", body: body(t, setAlert("labels", map[string]any{"a": 1})), want: "alerts.labels: JSON number where a string is expected"},
		{name: "label name empty", body: body(t, setAlert("labels", map[string]any{"": "x"})), want: "alerts[0].labels: empty name"},
		{name: "label name control", body: body(t, setAlert("labels", map[string]any{"a\nb": "x"})), want: `alerts[0].labels["a\nb"]: name has invalid UTF-8 or a control character`},
		{name: "label name NUL", body: body(t, setAlert("labels", map[string]any{"a\x00": "x"})), want: `alerts[0].labels["a\x00"]`},
		{name: "annotation name control", body: body(t, setAlert("annotations", map[string]any{"\x7f": "x"})), want: `alerts[0].annotations["\x7f"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := Decode(bytes.NewReader(tt.body), Limits{})
			if err == nil {
				t.Fatalf("Decode accepted %s: %+v", tt.body, n)
			}
			if !errors.Is(err, ErrInvalid) || errors.Is(err, ErrTooLarge) {
				t.Errorf("error %v: want ErrInvalid, not ErrTooLarge", err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v: want %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestDecodeBodyLimit(t *testing.T) {
	// amBody padded with trailing white space (allowed after the object) to size bytes.
	padded := func(size int) []byte {
		return append([]byte(amBody), bytes.Repeat([]byte(" "), size-len(amBody))...)
	}
	tests := []struct {
		name    string
		lim     Limits
		size    int
		tooBig  bool
		wantMsg string
	}{
		{name: "default at the bound", size: DefaultMaxBodyBytes},
		{name: "default one over", size: DefaultMaxBodyBytes + 1, tooBig: true, wantMsg: "over 1048576 bytes"},
		{name: "set at the bound", lim: Limits{MaxBodyBytes: int64(len(amBody))}, size: len(amBody)},
		{name: "set one over", lim: Limits{MaxBodyBytes: int64(len(amBody)) - 1}, size: len(amBody), tooBig: true},
		{name: "far over", lim: Limits{MaxBodyBytes: 1024}, size: 10 << 20, tooBig: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(padded(tt.size)), tt.lim)
			switch {
			case tt.tooBig && !errors.Is(err, ErrTooLarge):
				t.Fatalf("error %v, want ErrTooLarge", err)
			case tt.tooBig && errors.Is(err, ErrInvalid):
				t.Fatalf("error %v is ErrInvalid too", err)
			case !tt.tooBig && err != nil:
				t.Fatalf("Decode: %v", err)
			case err != nil && !strings.Contains(err.Error(), tt.wantMsg):
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

// TestDecodeBounds checks every count and size bound exactly at it and one over.
func TestDecodeBounds(t *testing.T) {
	lim := Limits{MaxAlerts: 3, MaxLabels: 4, MaxNameBytes: 8, MaxLabelValueBytes: 16, MaxAnnotationValueBytes: 32}
	pairs := func(n int) map[string]any {
		m := map[string]any{}
		for i := range n {
			m[fmt.Sprintf("l%d", i)] = "v"
		}
		return m
	}
	alerts := func(n int) func(map[string]any) {
		return func(m map[string]any) {
			var as []any
			for i := range n {
				b, _ := json.Marshal(alert0(m))
				var a map[string]any
				_ = json.Unmarshal(b, &a)
				a["fingerprint"] = fmt.Sprintf("%016x", i)
				as = append(as, a)
			}
			m["alerts"] = as
		}
	}
	setAlert := func(k string, v any) func(map[string]any) {
		return func(m map[string]any) { alert0(m)[k] = v }
	}
	tests := []struct {
		name   string
		at     func(map[string]any)
		over   func(map[string]any)
		reason string
	}{
		{"alerts", alerts(3), alerts(4), "4 alerts, at most 3"},
		{"labels", setAlert("labels", pairs(4)), setAlert("labels", pairs(5)), "alerts[0].labels: 5 entries, at most 4"},
		{"annotations", setAlert("annotations", pairs(4)), setAlert("annotations", pairs(5)), "alerts[0].annotations: 5 entries, at most 4"},
		{"label name", setAlert("labels", map[string]any{"n2345678": "v"}), setAlert("labels", map[string]any{"n23456789": "v"}), "name is 9 bytes, at most 8"},
		{"label name in runes", setAlert("labels", map[string]any{"näme_ü": "v"}), setAlert("labels", map[string]any{"näme_üü": "v"}), "name is 10 bytes, at most 8"},
		{"label value", setAlert("labels", map[string]any{"a": strings.Repeat("v", 16)}), setAlert("labels", map[string]any{"a": strings.Repeat("v", 17)}), `alerts[0].labels["a"]: value is 17 bytes, at most 16`},
		{"annotation value", setAlert("annotations", map[string]any{"a": strings.Repeat("v", 32)}), setAlert("annotations", map[string]any{"a": strings.Repeat("v", 33)}), `alerts[0].annotations["a"]: value is 33 bytes, at most 32`},
	}
	// small cuts amBody down to one alert within lim before a case's own change.
	small := func(change func(map[string]any)) func(map[string]any) {
		return func(m map[string]any) {
			m["alerts"] = m["alerts"].([]any)[:1]
			alert0(m)["labels"] = map[string]any{"a": "v"}
			alert0(m)["annotations"] = map[string]any{}
			change(m)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := Decode(bytes.NewReader(body(t, small(tt.at))), lim)
			if err != nil {
				t.Fatalf("at the bound: %v", err)
			}
			checkInvariants(t, n, lim.WithDefaults())
			_, err = Decode(bytes.NewReader(body(t, small(tt.over))), lim)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("one over: error %v, want ErrInvalid with %q", err, tt.reason)
			}
		})
	}
}

func TestDecodeUTF8LabelNames(t *testing.T) {
	// Prometheus 3 sends UTF-8 label names by default; a 4xx would make Alertmanager drop the
	// whole notification.
	b := body(t, func(m map[string]any) {
		alert0(m)["labels"] = map[string]any{"http.route": "/cart", "k8s.pod.name": "web", "ünïcode name": "x"}
	})
	n, err := Decode(bytes.NewReader(b), Limits{})
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if n.Alerts[0].Labels["k8s.pod.name"] != "web" {
		t.Errorf("labels = %v", n.Alerts[0].Labels)
	}
}

func TestDecodeLongFieldIsNotEchoed(t *testing.T) {
	long := strings.Repeat("x", 100_000)
	_, err := Decode(bytes.NewReader(body(t, func(m map[string]any) { m["version"] = long })), Limits{})
	if !errors.Is(err, ErrVersion) || len(err.Error()) > 200 {
		t.Fatalf("error (%d bytes) %.300v", len(err.Error()), err)
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestDecodeReadError(t *testing.T) {
	cause := errors.New("connection reset")
	_, err := Decode(io.MultiReader(strings.NewReader(amBody[:10]), failingReader{cause}), Limits{})
	if !errors.Is(err, cause) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v: want the reader's error only", err)
	}
}

func TestAlertActive(t *testing.T) {
	now := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		status string
		endsAt time.Time
		want   bool
	}{
		{"firing, no end", StatusFiring, time.Time{}, true},
		{"firing, ends later", StatusFiring, now.Add(time.Second), true},
		{"firing, ends now", StatusFiring, now, false},
		{"firing, ended", StatusFiring, now.Add(-time.Second), false},
		{"resolved, no end", StatusResolved, time.Time{}, false},
		{"resolved, ends later", StatusResolved, now.Add(time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Alert{Status: tt.status, EndsAt: tt.endsAt}
			if got := a.Active(now); got != tt.want {
				t.Errorf("Active = %v, want %v", got, tt.want)
			}
		})
	}
}
