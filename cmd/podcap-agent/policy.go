package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/podcap/podcap/agent"
	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/native"
	"github.com/podcap/podcap/policy"
)

const policyUsage = `usage: podcap-agent policy eval --pod FILE --policy-dir DIR [flags]

Evaluates the policy of DIR for one pod, offline, as the agent would, and prints the input, the
decision (checked as the agent checks it: the node's limits, and the filter with tcpdump -d,
and for the native engine with tcpdump -ddd), the engine it runs on,
data.podcap.manual_allowed and the flight recorder (data.podcap.recorder) as JSON.
Exit status: 0 evaluated; 1 the policy failed (compile, evaluation, decision shape or limits:
"error" says why); 2 bad usage or unreadable input files.

flags:
`

// policyExplanation is what `policy eval` prints.
type policyExplanation struct {
	Version       string           `json:"version"`
	Files         []string         `json:"files"`
	Input         *policy.Input    `json:"input"`
	Decision      *policy.Decision `json:"decision"`
	ManualAllowed bool             `json:"manual_allowed"`
	// Source and Trigger label the capture of a valid capturing decision as the agent would
	// (alert or policy; the rule's reason and each alert's name, fingerprint, generatorURL).
	Source  string   `json:"source,omitempty"`
	Trigger []string `json:"trigger,omitempty"`
	// Engine is the engine the capture of a valid capturing decision runs on (its engine
	// field, else --engine), RecorderEngine the flight recorder's.
	Engine         string `json:"engine,omitempty"`
	RecorderEngine string `json:"recorder_engine,omitempty"`
	// Recorder is data.podcap.recorder, the pod's flight recorder ({"capture": false, ...}
	// when the policy defines none), checked like the decision; null when it is malformed.
	Recorder *policy.Decision `json:"recorder"`
	Error    *string          `json:"error"` // null when the policy decided validly
}

// runPolicy runs `podcap-agent policy ARGS...` and returns the exit status.
func runPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "eval" {
		fmt.Fprint(stderr, policyUsage)
		fmt.Fprintln(stderr, "  (run 'podcap-agent policy eval -h' for the flags)")
		return 2
	}
	fs := flag.NewFlagSet("podcap-agent policy eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, policyUsage); fs.PrintDefaults() }
	var podFile, alertsFile, dir, node, nowFlag, key, tcpdump, engine string
	var evalTimeout time.Duration
	limits := policy.DefaultLimits()
	fs.StringVar(&podFile, "pod", "", "`FILE` of the pod, as 'kubectl get pod -o json' (or -o yaml) prints it; - for stdin")
	fs.StringVar(&alertsFile, "alerts", "", "`FILE` of the active alerts: a JSON list of alerts, or an Alertmanager webhook payload")
	fs.StringVar(&dir, "policy-dir", "", "`DIR` of the policy files (*.rego, not *_test.rego)")
	fs.StringVar(&node, "node", "", "node name of the input (default: the pod's spec.nodeName)")
	fs.StringVar(&nowFlag, "now", "", "time of the evaluation, RFC 3339 (default: now)")
	fs.StringVar(&key, "annotation-key", agent.DefaultAnnotationKey, "the agent's manual capture annotation")
	fs.IntVar(&limits.MaxFiles, "max-files", 64, "the agent's --max-files")
	fs.Int64Var(&limits.MaxFileSizeBytes, "max-file-size-bytes", limits.MaxFileSizeBytes, "the agent's --max-file-size-bytes")
	fs.DurationVar(&limits.MaxDuration, "max-capture-duration", limits.MaxDuration, "the agent's --max-capture-duration")
	fs.DurationVar(&evalTimeout, "policy-eval-timeout", policy.DefaultEvalTimeout, "the agent's --policy-eval-timeout")
	fs.StringVar(&tcpdump, "tcpdump", "tcpdump", "the agent's --tcpdump: checks a decision's filter (tcpdump -d, opens no interface)")
	fs.StringVar(&engine, "engine", capture.EngineTcpdump, "the agent's --engine: the engine of a decision without one (tcpdump or native); a capture on the native engine must have a filter it runs exactly")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	in, err := policyEvalInput(podFile, alertsFile, node, nowFlag, key, limits)
	if err == nil && dir == "" {
		err = errors.New("--policy-dir is required")
	}
	if err == nil && evalTimeout <= 0 {
		err = errors.New("--policy-eval-timeout must be positive")
	}
	if err == nil {
		err = checkEngine(engine)
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err != nil {
		fmt.Fprintf(stderr, "podcap-agent policy eval: %v\n", err)
		return 2
	}
	if _, err := os.Stat(dir); err != nil {
		fmt.Fprintf(stderr, "podcap-agent policy eval: %v\n", err) // the agent reads a missing dir as no policy; here it is a typo
		return 2
	}

	engines := agent.Engines{Default: engine, NativeFilters: native.NewFilterChecker(tcpdump)}
	out, err := explainPolicy(context.Background(), dir, evalTimeout, in, limits, capture.NewFilterChecker(tcpdump), engines)
	if err != nil {
		msg := err.Error()
		out.Error = &msg
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if werr := enc.Encode(out); werr != nil {
		fmt.Fprintf(stderr, "podcap-agent policy eval: %v\n", werr)
		return 2
	}
	if err != nil {
		return 1
	}
	return 0
}

// explainPolicy loads the policy of dir and decides for in, with the agent's engine.
func explainPolicy(ctx context.Context, dir string, evalTimeout time.Duration, in policy.Input, limits policy.Limits, filters agent.FilterChecker, engines agent.Engines) (policyExplanation, error) {
	out := policyExplanation{Input: &in, ManualAllowed: true, Files: []string{}}
	e, err := policy.New(policy.Options{Dir: dir, Logger: logr.Discard(), EvalTimeout: evalTimeout})
	if err != nil {
		return out, err
	}
	st := e.Status()
	if !st.LastReloadSuccessful {
		return out, fmt.Errorf("load policy: %s", st.LastError)
	}
	out.Version, out.Files = st.Version, st.Files
	r, err := e.Decide(ctx, in)
	out.ManualAllowed = r.ManualAllowed
	if r.RecorderErr == nil && err == nil {
		out.Recorder = &r.Recorder
	}
	if err != nil {
		return out, err
	}
	out.Decision = &r.Decision
	if err := agent.CheckDecision(ctx, r.Decision, in.Alerts, limits, filters, engines); err != nil {
		return out, err
	}
	out.Source, out.Trigger = agent.DecisionTrigger(r.Decision, in.Alerts)
	if r.Decision.Capture {
		out.Engine = engines.Of(r.Decision)
	}
	if r.RecorderErr != nil {
		return out, fmt.Errorf("flight recorder: %w", r.RecorderErr)
	}
	if err := agent.CheckDecision(ctx, r.Recorder, nil, limits, filters, engines); err != nil {
		return out, fmt.Errorf("flight recorder: %w", err)
	}
	if r.Recorder.Capture {
		out.RecorderEngine = engines.Of(r.Recorder)
	}
	return out, nil
}

// policyEvalInput builds the input from the files, with policy.BuildInput as the agent does.
func policyEvalInput(podFile, alertsFile, node, nowFlag, key string, limits policy.Limits) (policy.Input, error) {
	if podFile == "" {
		return policy.Input{}, errors.New("--pod is required")
	}
	var pod corev1.Pod
	if err := readPolicyFile(podFile, &pod); err != nil {
		return policy.Input{}, fmt.Errorf("--pod: %w", err)
	}
	if pod.Kind != "" && pod.Kind != "Pod" {
		return policy.Input{}, fmt.Errorf("--pod %s: kind %s, want one Pod", podFile, pod.Kind)
	}
	var alerts []policy.Alert
	if alertsFile != "" {
		var err error
		if alerts, err = readAlerts(alertsFile); err != nil {
			return policy.Input{}, fmt.Errorf("--alerts: %w", err)
		}
	}
	now := time.Now()
	if nowFlag != "" {
		var err error
		if now, err = time.Parse(time.RFC3339, nowFlag); err != nil {
			return policy.Input{}, fmt.Errorf("--now %q: want an RFC 3339 time such as 2026-03-01T12:00:00Z", nowFlag)
		}
	}
	if node == "" {
		node = pod.Spec.NodeName
	}
	return policy.BuildInput(&pod, node, now, agent.ParseManual(&pod, key, limits.MaxFiles), alerts, limits), nil
}

// readAlerts reads a JSON list of alerts or an Alertmanager webhook payload ({"alerts": [...]}).
func readAlerts(path string) ([]policy.Alert, error) {
	var raw json.RawMessage
	if err := readPolicyFile(path, &raw); err != nil {
		return nil, err
	}
	var alerts []policy.Alert
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
		if err := json.Unmarshal(raw, &alerts); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return alerts, nil
	}
	var payload struct {
		Alerts *[]policy.Alert `json:"alerts"`
	}
	if err := json.Unmarshal(raw, &payload); err != nil || payload.Alerts == nil {
		return nil, fmt.Errorf("%s: want a list of alerts or an Alertmanager webhook payload (%v)", path, err)
	}
	return *payload.Alerts, nil
}

// readPolicyFile decodes a JSON or YAML file ("-": stdin) into v.
func readPolicyFile(path string, v any) error {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
