package policy

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
)

func newTestEngine(t *testing.T, dir string) *Engine {
	t.Helper()
	logger, _ := ktesting.NewTestContext(t)
	// tests of what rules decide, not of the bound: a loaded machine under -race may take
	// longer than DefaultEvalTimeout
	e, err := New(Options{Dir: dir, Logger: logger, EvalTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// podInput is the input of testPod in namespace ns with the given labels and annotations, at
// testNow.
func podInput(ns string, labels, annotations map[string]string) Input {
	pod := testPod()
	pod.Namespace, pod.Labels, pod.Annotations = ns, labels, annotations
	return BuildInput(pod, "node-1", testNow, Manual{}, nil, Limits{})
}

func TestDecideShippedRules(t *testing.T) {
	e := newTestEngine(t, rulesDir)
	if st := e.Status(); !st.LastReloadSuccessful || len(st.Files) != 8 || st.Version == "" {
		t.Fatalf("status = %+v", st)
	}
	ring := func(reason string) Decision {
		return Decision{Capture: true, Reason: reason, Files: 5, FileSizeBytes: 1_000_000, AlertFingerprints: []string{}, Format: FormatPcap}
	}
	dns := ring("label podcap.io/capture-dns=true")
	dns.Snaplen, dns.Filter = 1500, "udp port 53 or tcp port 53"
	debug := ring("annotation podcap.io/debug-until=2026-03-01T12:30:00Z") // testNow is 12:00:00.0000005Z
	debug.MaxDuration = Duration(30 * time.Minute)
	alerted := podInput("shop", map[string]string{"app": "web"}, nil)
	alerted.Alerts = []Alert{
		{Fingerprint: "fb", Status: "firing", Labels: map[string]string{"alertname": "Latency", "namespace": "shop", "pod": "web-0"},
			Annotations: map[string]string{"podcap_stop_grace": "30s", "podcap_files": "bad"}},
		{Fingerprint: "fa", Status: "firing", Labels: map[string]string{"alertname": "Errors", "namespace": "shop", "pod": "web-0"},
			Annotations: map[string]string{}},
	}
	alert := Decision{Capture: true, Reason: "alerts Errors, Latency firing", Files: 5, FileSizeBytes: 1_000_000,
		MaxDuration: Duration(time.Hour), AlertFingerprints: []string{"fa", "fb"}, StopGrace: Duration(2 * time.Minute),
		Cooldown: Duration(5 * time.Minute), Format: FormatPcapng}
	tests := []struct {
		name        string
		in          Input
		want        Decision
		wantAllowed bool
	}{
		{"alerts", alerted, alert, true},
		{"nothing", podInput("shop", map[string]string{"app": "web"}, nil), Decision{Reason: NoDecision, AlertFingerprints: []string{}}, true},
		{"label", podInput("shop", map[string]string{"podcap.io/capture": "true"}, nil), ring("label podcap.io/capture=true"), true},
		{"dns", podInput("shop", map[string]string{"podcap.io/capture-dns": "true"}, nil), dns, true},
		{"debug until", podInput("shop", nil, map[string]string{"podcap.io/debug-until": "2026-03-01T12:30:00Z"}), debug, true},
		{"debug until past", podInput("shop", nil, map[string]string{"podcap.io/debug-until": "2026-03-01T11:30:00Z"}), Decision{Reason: NoDecision, AlertFingerprints: []string{}}, true},
		{"kube-system", podInput("kube-system", map[string]string{"podcap.io/capture": "true"}, nil),
			Decision{Reason: "denied: namespace kube-system is on the deny list of namespace-deny.rego", AlertFingerprints: []string{}}, false},
		{"never", podInput("shop", map[string]string{"podcap.io/capture": "never", "podcap.io/capture-dns": "true"}, map[string]string{"podcap.io/debug-until": "2026-03-01T12:30:00Z"}),
			Decision{Reason: "denied: label podcap.io/capture=never on the pod (opt-out.rego)", AlertFingerprints: []string{}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := e.Decide(context.Background(), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Decision, tt.want) || r.ManualAllowed != tt.wantAllowed || r.Version != e.Version() {
				t.Errorf("result = %+v\nwant     %+v, manual allowed %v, version %s", r, tt.want, tt.wantAllowed, e.Version())
			}
			if err := r.Decision.Validate(DefaultLimits()); err != nil {
				t.Errorf("shipped rules decided an invalid capture: %v", err)
			}
			if r.Recorder.Capture || r.RecorderErr != nil {
				t.Errorf("recorder = %+v, %v: want none", r.Recorder, r.RecorderErr)
			}
		})
	}
	t.Run("recorder", func(t *testing.T) {
		r, err := e.Decide(context.Background(), podInput("shop", map[string]string{"podcap.io/recorder": "true", "podcap.io/capture": "true"}, nil))
		if err != nil {
			t.Fatal(err)
		}
		want := Decision{Capture: true, Reason: "label podcap.io/recorder=true", Files: 2, FileSizeBytes: 1_000_000, AlertFingerprints: []string{}, Format: FormatPcap}
		if !reflect.DeepEqual(r.Recorder, want) || r.RecorderErr != nil || !reflect.DeepEqual(r.Decision, ring("label podcap.io/capture=true")) {
			t.Errorf("result = %+v\nwant recorder %+v beside the label's capture", r, want)
		}
		r, err = e.Decide(context.Background(), podInput("kube-system", map[string]string{"podcap.io/recorder": "true"}, nil))
		if err != nil || r.Recorder.Capture {
			t.Errorf("kube-system: recorder %+v, %v: want none (denied)", r.Recorder, err)
		}
	})
}

func TestRecorderDecision(t *testing.T) {
	tests := []struct {
		name, policy string
		want         Decision
		wantErr      string // of the recorder; the capture decision is always fine
	}{
		{"undefined", "package podcap\n\ndecision := {\"capture\": true}\n", Decision{Reason: NoRecorder, AlertFingerprints: []string{}}, ""},
		{"defaults", "package podcap\n\ndecision := {\"capture\": true}\n\nrecorder := {\"capture\": true}\n",
			Decision{Capture: true, Reason: DefaultRecorderReason, Files: DefaultRecorderFiles, FileSizeBytes: DefaultRecorderFileSizeBytes, AlertFingerprints: []string{}, Format: FormatPcap}, ""},
		{"set", "package podcap\n\ndecision := {\"capture\": true}\n\nrecorder := {\"capture\": true, \"reason\": \"r\", \"files\": 3, \"file_size_bytes\": 65536, \"snaplen\": 128, \"filter\": \"tcp\", \"format\": \"pcapng\", \"engine\": \"native\"}\n",
			Decision{Capture: true, Reason: "r", Files: 3, FileSizeBytes: 65536, Snaplen: 128, Filter: "tcp", AlertFingerprints: []string{}, Format: FormatPcapng, Engine: EngineNative}, ""},
		{"bad engine", "package podcap\n\ndecision := {\"capture\": true}\n\nrecorder := {\"capture\": true, \"engine\": \"pcap\"}\n",
			Decision{Reason: NoRecorder, AlertFingerprints: []string{}}, `recorder.engine: "pcap" is not a capture engine`},
		{"off", "package podcap\n\ndecision := {\"capture\": true}\n\nrecorder := {\"capture\": false}\n", Decision{AlertFingerprints: []string{}}, ""},
		{"no alerts", "package podcap\n\ndecision := {\"capture\": true}\n\nrecorder := {\"capture\": true, \"alert_fingerprints\": []}\n",
			Decision{Reason: NoRecorder, AlertFingerprints: []string{}}, "recorder.alert_fingerprints: unknown field"},
		{"no max_duration", "package podcap\n\ndecision := {\"capture\": true}\n\nrecorder := {\"capture\": true, \"max_duration\": \"1m\"}\n",
			Decision{Reason: NoRecorder, AlertFingerprints: []string{}}, "recorder.max_duration: unknown field"},
		{"wrong type", "package podcap\n\ndecision := {\"capture\": true}\n\nrecorder := {\"capture\": true, \"files\": \"2\"}\n",
			Decision{Reason: NoRecorder, AlertFingerprints: []string{}}, `recorder.files: want an integer, got string "2"`},
		{"not an object", "package podcap\n\ndecision := {\"capture\": true}\n\nrecorder := true\n",
			Decision{Reason: NoRecorder, AlertFingerprints: []string{}}, "recorder: want an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, newConfigMapDir(t, map[string]string{"p.rego": tt.policy}).dir)
			r, err := e.Decide(context.Background(), podInput("shop", nil, nil))
			if err != nil || !r.Decision.Capture {
				t.Fatalf("decision %+v, %v: the recorder must not spoil it", r.Decision, err)
			}
			if tt.wantErr == "" && r.RecorderErr != nil || tt.wantErr != "" && (r.RecorderErr == nil || !strings.Contains(r.RecorderErr.Error(), tt.wantErr)) {
				t.Fatalf("recorder error = %v, want %q", r.RecorderErr, tt.wantErr)
			}
			if !reflect.DeepEqual(r.Recorder, tt.want) {
				t.Errorf("recorder = %+v, want %+v", r.Recorder, tt.want)
			}
		})
	}
}

func TestNoPolicy(t *testing.T) {
	for name, dir := range map[string]string{
		"no dir":      "",
		"missing dir": filepath.Join(t.TempDir(), "missing"),
		"empty dir":   t.TempDir(),
		"only tests":  newConfigMapDir(t, map[string]string{"a_test.rego": "package podcap_test\n"}).dir,
		"not rego":    newConfigMapDir(t, map[string]string{"README.md": "hi"}).dir,
	} {
		t.Run(name, func(t *testing.T) {
			e := newTestEngine(t, dir)
			r, err := e.Decide(context.Background(), podInput("kube-system", nil, nil))
			if err != nil {
				t.Fatal(err)
			}
			if r.Decision.Capture || r.Decision.Reason != NoPolicy || !r.ManualAllowed || r.Version != version(nil) {
				t.Errorf("result = %+v", r)
			}
			if st := e.Status(); !st.LastReloadSuccessful || st.Version != version(nil) || len(st.Files) != 0 {
				t.Errorf("status = %+v", st)
			}
		})
	}
}

// TestLoadsConfigMapLayout: top-level files only, through the kubelet's links; not the
// ..data and ..<ts> entries, dotfiles, directories or tests.
func TestLoadsConfigMapLayout(t *testing.T) {
	c := newConfigMapDir(t, map[string]string{
		"a.rego":      "package podcap\n\ndecision := {\"capture\": true}\n",
		"a_test.rego": "package podcap_test\n\nthis is not Rego\n",
	})
	writeFiles(t, c.dir, map[string]string{".hidden.rego": "not Rego"})
	must(t, mkdir(filepath.Join(c.dir, "sub.rego")))
	writeFiles(t, filepath.Join(c.dir, "sub.rego"), map[string]string{"b.rego": "not Rego"})
	e := newTestEngine(t, c.dir)
	if st := e.Status(); !st.LastReloadSuccessful || !reflect.DeepEqual(st.Files, []string{"a.rego"}) {
		t.Fatalf("status = %+v", st)
	}
}

func TestPolicyErrors(t *testing.T) {
	tests := []struct {
		name        string
		policy      string
		wantErr     string
		wantAllowed bool
		wantCapture bool
	}{
		{name: "undefined decision", policy: "package podcap\n\nx := 1\n", wantAllowed: true},
		{name: "wrong type", policy: `package podcap

decision := {"capture": "yes", "files": "3"}
`, wantErr: `decision.capture: want true or false, got string "yes"`, wantAllowed: true},
		{name: "unknown field", policy: `package podcap

decision := {"capture": true, "file": 3}
`, wantErr: "decision.file: unknown field", wantAllowed: true},
		{name: "not an object", policy: "package podcap\n\ndecision := true\n", wantErr: "decision: want an object, got boolean true", wantAllowed: true},
		{name: "manual_allowed not a boolean", policy: `package podcap

manual_allowed := "no"

decision := {"capture": true}
`, wantErr: `manual_allowed: want true or false, got string "no"`, wantAllowed: true, wantCapture: true},
		{name: "manual veto, bad decision", policy: `package podcap

manual_allowed := false

decision := {"capture": 1}
`, wantErr: "decision.capture", wantAllowed: false},
		{name: "conflict", policy: `package podcap

decision := {"capture": true} if input.pod.namespace == "shop"

decision := {"capture": false} if input.pod.name == "web-0"
`, wantErr: "eval_conflict_error", wantAllowed: true},
		{name: "builtin error is undefined", policy: `package podcap

decision := {"capture": true} if time.parse_rfc3339_ns(input.pod.name) > 0
`, wantAllowed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, newConfigMapDir(t, map[string]string{"p.rego": tt.policy}).dir)
			if st := e.Status(); !st.LastReloadSuccessful {
				t.Fatalf("compile: %s", st.LastError)
			}
			r, err := e.Decide(context.Background(), podInput("shop", nil, nil))
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
			if r.ManualAllowed != tt.wantAllowed || r.Decision.Capture != tt.wantCapture || r.Version == "" {
				t.Errorf("result = %+v, want manual allowed %v, capture %v", r, tt.wantAllowed, tt.wantCapture)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, policy, wantErr string
	}{
		{"parse error", "package podcap\n\ndecision := {\n", "rego_parse_error"},
		{"Rego v0", "package podcap\n\ndecision = {\"capture\": true} { true }\n", "rego_parse_error"},
		{"strict: unused variable", "package podcap\n\ndecision := {\"capture\": true} if {\n\tx := 1\n\ttrue\n}\n", "assigned var x unused"},
		{"strict: unused import", "package podcap\n\nimport data.foo\n\ndecision := {\"capture\": true}\n", "import data.foo unused"},
		{"other package", "package podcapture\n\ndecision := {\"capture\": true}\n", "p.rego: package podcapture: a policy file must be in package podcap"},
		{"http.send", "package podcap\n\nx := http.send({\"method\": \"get\", \"url\": \"http://169.254.169.254/\"})\n", "undefined function http.send"},
		{"opa.runtime", "package podcap\n\nenv := opa.runtime().env\n", "undefined function opa.runtime"},
		{"type error", "package podcap\n\ndecision := {\"capture\": true, \"files\": \"3\" + 1}\n", "rego_type_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, newConfigMapDir(t, map[string]string{"p.rego": tt.policy}).dir)
			st := e.Status()
			if st.LastReloadSuccessful || !strings.Contains(st.LastError, tt.wantErr) || st.Version != "" {
				t.Fatalf("status = %+v\nwant a failed reload with %q", st, tt.wantErr)
			}
			r, err := e.Decide(context.Background(), podInput("shop", nil, nil))
			if !errors.Is(err, ErrNotLoaded) || !r.ManualAllowed || r.Decision.Capture {
				t.Errorf("Decide = %+v, %v; want ErrNotLoaded, manual allowed", r, err)
			}
		})
	}
}

func TestSubPackage(t *testing.T) {
	e := newTestEngine(t, newConfigMapDir(t, map[string]string{
		"lib.rego": "package podcap.lib\n\nteam(pod) := pod.labels.team\n",
		"p.rego":   "package podcap\n\nimport data.podcap.lib\n\ndecision := {\"capture\": true, \"reason\": lib.team(input.pod)}\n",
	}).dir)
	in := podInput("shop", map[string]string{"team": "payments"}, nil)
	r, err := e.Decide(context.Background(), in)
	if err != nil || r.Decision.Reason != "payments" {
		t.Fatalf("Decide = %+v, %v", r, err)
	}
}

// A rule that runs for ages ends at the engine's evaluation timeout as an ErrEvalTimeout
// error, and the caller's own cancellation is told apart from it.
func TestDecideTimesOut(t *testing.T) {
	// 10^10 steps without allocating: hours of evaluation without a timeout
	slow := `package podcap

decision := {"capture": true} if {
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i * j == -1
}
`
	logger, _ := ktesting.NewTestContext(t)
	e, err := New(Options{Dir: newConfigMapDir(t, map[string]string{"p.rego": slow}).dir, Logger: logger, EvalTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if st := e.Status(); !st.LastReloadSuccessful {
		t.Fatalf("compile: %s", st.LastError)
	}
	decide := func(ctx context.Context) (Result, error) {
		type out struct {
			r   Result
			err error
		}
		done := make(chan out, 1)
		go func() { r, err := e.Decide(ctx, podInput("shop", nil, nil)); done <- out{r, err} }()
		select {
		case o := <-done:
			return o.r, o.err
		case <-time.After(30 * time.Second): // a bound on the failure, not a synchronisation
			t.Fatal("Decide did not return: no evaluation timeout")
			return Result{}, nil
		}
	}

	r, err := decide(context.Background())
	if !errors.Is(err, ErrEvalTimeout) || !strings.Contains(err.Error(), "timed out after 50ms") {
		t.Fatalf("error = %v, want ErrEvalTimeout after 50ms", err)
	}
	if r.Decision.Capture || !r.ManualAllowed || r.Version != e.Version() {
		t.Fatalf("result = %+v, want no capture, manual allowed", r)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := decide(ctx); !errors.Is(err, context.Canceled) || errors.Is(err, ErrEvalTimeout) {
		t.Fatalf("cancelled caller: error = %v, want context.Canceled, not a timeout", err)
	}
}

func TestNegativeEvalTimeout(t *testing.T) {
	if _, err := New(Options{EvalTimeout: -time.Second}); err == nil {
		t.Fatal("a negative evaluation timeout was accepted")
	}
}
