package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/podcap/podcap/agent"
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
	var podFile, alertsFile, dir, node, nowFlag string
	// the agent's own flags, defaults and checks (options.go): what the agent refuses, this refuses
	var d DecisionOptions
	d.AddFlags(fs)
	fs.StringVar(&podFile, "pod", "", "`FILE` of the pod, as 'kubectl get pod NAME -o json' (or -o yaml) prints it; - for stdin")
	fs.StringVar(&alertsFile, "alerts", "", "`FILE` of the active alerts: a JSON list of alerts, or an Alertmanager webhook payload ({\"alerts\": [...]})")
	fs.StringVar(&dir, "policy-dir", "", "`DIR` of the policy files (*.rego, not *_test.rego), the agent's --policy-dir")
	fs.StringVar(&node, "node", "", "node name of the input (default: the pod's spec.nodeName)")
	fs.StringVar(&nowFlag, "now", "", "time of the evaluation, RFC 3339 (default: now)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	errs := d.Validate()
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected argument %q: every input is a flag (--pod, --policy-dir, --alerts)", fs.Arg(0)))
	}
	errs = append(errs, checkPolicyDir(dir))
	in, err := policyEvalInput(podFile, alertsFile, node, nowFlag, d.AnnotationKey, d.Limits())
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "podcap-agent policy eval: %s\n", line)
		}
		return 2
	}

	filters, engines := d.Checkers() // the agent's (newController)
	out, err := explainPolicy(context.Background(), dir, d.PolicyEvalTimeout, in, d.Limits(), filters, engines)
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
	pod, err := readPod(podFile)
	if err != nil {
		return policy.Input{}, err
	}
	var alerts []policy.Alert
	if alertsFile != "" {
		if alerts, err = readAlerts(alertsFile); err != nil {
			return policy.Input{}, err
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
	return policy.BuildInput(pod, node, now, agent.ParseManual(pod, key, limits.MaxFiles), alerts, limits), nil
}

// checkPolicyDir accepts a directory holding at least one policy file, as the agent loads it.
// The agent reads a missing or empty --policy-dir as "no policy"; here it is a mistake.
func checkPolicyDir(dir string) error {
	if dir == "" {
		return errors.New("--policy-dir is required: the directory of the policy files (*.rego), as the agent's --policy-dir")
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--policy-dir %s: no such directory", dir)
	case err != nil:
		return fmt.Errorf("--policy-dir %s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("--policy-dir %s: not a directory (want the directory of the policy files, not one file)", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("--policy-dir %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".rego") && !strings.HasSuffix(name, "_test.rego") && !strings.HasPrefix(name, ".") {
			return nil
		}
	}
	return fmt.Errorf("--policy-dir %s: no policy files in it (*.rego, not *_test.rego): the agent would run without a policy", dir)
}

// readPod reads the pod of --pod: one Pod with a name, as kubectl prints it.
func readPod(path string) (*corev1.Pod, error) {
	const want = "want one Pod as 'kubectl get pod NAME -o json' (or -o yaml) prints it"
	if path == "" {
		return nil, errors.New("--pod is required: the pod to evaluate, as 'kubectl get pod NAME -o json' prints it (- for stdin)")
	}
	b, err := readInputFile(path)
	if err != nil {
		return nil, fmt.Errorf("--pod %s: %w", path, err)
	}
	var meta metav1.TypeMeta
	if err := yaml.Unmarshal(b, &meta); err != nil {
		return nil, fmt.Errorf("--pod %s: not JSON or YAML of an object (%s): %s", path, firstLine(err), want)
	}
	if meta.Kind != "" && meta.Kind != "Pod" {
		return nil, fmt.Errorf("--pod %s: kind %s: %s", path, meta.Kind, want)
	}
	var pod corev1.Pod
	if err := yaml.Unmarshal(b, &pod); err != nil {
		return nil, fmt.Errorf("--pod %s: not a Pod (%s): %s", path, firstLine(err), want)
	}
	if pod.Name == "" {
		return nil, fmt.Errorf("--pod %s: no metadata.name: %s", path, want)
	}
	return &pod, nil
}

// readAlerts reads a JSON list of alerts or an Alertmanager webhook payload ({"alerts": [...]}).
func readAlerts(path string) ([]policy.Alert, error) {
	const want = `want a JSON list of alerts or an Alertmanager webhook payload ({"alerts": [...]})`
	b, err := readInputFile(path)
	if err != nil {
		return nil, fmt.Errorf("--alerts %s: %w", path, err)
	}
	var raw json.RawMessage
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("--alerts %s: not JSON or YAML (%s): %s", path, firstLine(err), want)
	}
	var alerts []policy.Alert
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
		if err := json.Unmarshal(raw, &alerts); err != nil {
			return nil, fmt.Errorf("--alerts %s: not a list of alerts (%s): %s", path, firstLine(err), want)
		}
		return alerts, nil
	}
	var payload struct {
		Alerts *[]policy.Alert `json:"alerts"`
	}
	if err := json.Unmarshal(raw, &payload); err != nil {
		return nil, fmt.Errorf("--alerts %s: %s: %s", path, firstLine(err), want)
	}
	if payload.Alerts == nil {
		return nil, fmt.Errorf("--alerts %s: no \"alerts\" list: %s", path, want)
	}
	return *payload.Alerts, nil
}

// firstLine says what is wrong in a decoding error, in the file's terms (not Go's types), up
// to the first newline.
func firstLine(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Sprintf("a JSON %s where an object was expected", te.Value)
		}
		return fmt.Sprintf("field %s: a JSON %s of the wrong type", te.Field, te.Value)
	}
	msg, _, _ := strings.Cut(err.Error(), "\n")
	for _, p := range []string{"error converting YAML to JSON: ", "error unmarshaling JSON: ", "while decoding JSON: ", "json: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}

// readInputFile reads path ("-": stdin).
func readInputFile(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}
