package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/metrics"
	"github.com/podcap/podcap/policy"
)

// Event reasons of the policy path.
const (
	ReasonPolicyError     = "PolicyError"           // the policy could not be evaluated for the pod
	ReasonInvalidDecision = "InvalidPolicyDecision" // the decision failed validation (filter, sizes, ...)
	ReasonManualVetoed    = "ManualCaptureVetoed"   // data.podcap.manual_allowed is false for the pod
)

// Policy is what the controller needs of the policy engine.
type Policy interface {
	// Decide bounds its own evaluation time (policy.Engine: --policy-eval-timeout) and says
	// so with an error wrapping policy.ErrEvalTimeout; it returns early when ctx ends.
	Decide(ctx context.Context, in policy.Input) (policy.Result, error)
	Version() string
}

// FilterChecker validates a BPF filter before it reaches tcpdump: capture.FilterChecker, the
// agent's one filter validator. Its error wraps capture.ErrInvalidFilter for a refusal; any
// other error is transient (tcpdump could not run).
type FilterChecker interface {
	Check(ctx context.Context, filter string) error
}

var _ FilterChecker = (*capture.FilterChecker)(nil)

// AlertSource is the set of active Alertmanager alerts a policy sees as input.alerts.
type AlertSource interface {
	// Active returns the alerts active at now, in a stable order, and the version of that
	// set: a version changes whenever the set does (an alert added, renewed with other
	// fields, resolved or expired), so a cached decision is never older than its alerts.
	Active(now time.Time) (alerts []policy.Alert, version string)
}

// decisionCache remembers the last decision per pod, keyed by what it was computed from: the
// pod's resourceVersion, the policy version and the alert set's version. Entries also expire
// after ttl, so rules that read input.now (a debug window that ends) are re-evaluated.
type decisionCache struct {
	ttl time.Duration

	mu sync.Mutex
	// mu protects the field below.
	entries map[string]cachedDecision // by pod key namespace/name; forgotten when the pod goes
}

type cachedDecision struct {
	uid                                           types.UID
	resourceVersion, policyVersion, alertsVersion string
	at                                            time.Time
	input                                         policy.Input
	result                                        policy.Result
	err                                           error
}

func (d *decisionCache) get(pod *corev1.Pod, policyVersion, alertsVersion string, now time.Time) (cachedDecision, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.entries[pod.Namespace+"/"+pod.Name]
	if !ok || e.uid != pod.UID || e.resourceVersion != pod.ResourceVersion || e.policyVersion != policyVersion ||
		e.alertsVersion != alertsVersion || now.Sub(e.at) >= d.ttl {
		return cachedDecision{}, false
	}
	return e, true
}

func (d *decisionCache) put(key string, e cachedDecision) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.entries[key] = e
}

func (d *decisionCache) forget(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.entries, key)
}

// evaluate returns the policy's result for the pod, from the cache when nothing it depends on
// changed. manual is the parsed annotation request. The policy's own errors (a timeout too)
// are part of the result and cached like a decision; evaluate's error is only that ctx ended
// during the evaluation: the caller gave up, the policy decided nothing, nothing is cached.
func (c *Controller) evaluate(ctx context.Context, pod *corev1.Pod, manual policy.Manual) (cachedDecision, error) {
	now := c.clock.Now()
	version := c.policy.Version()
	var active []policy.Alert
	alertsVersion := ""
	if c.cfg.Alerts != nil {
		active, alertsVersion = c.cfg.Alerts.Active(now)
	}
	if e, ok := c.decisions.get(pod, version, alertsVersion, now); ok {
		c.metrics.PolicyEvaluations.WithLabelValues("cached").Inc()
		return e, nil
	}
	in := policy.BuildInput(pod, c.cfg.NodeName, now, manual, active, c.cfg.Limits)
	res, err := c.policy.Decide(ctx, in)
	if err != nil && ctx.Err() != nil {
		// whatever the error says, it is the caller's cancellation (agent stopping, API
		// client gone), not the policy's answer for the pod
		return cachedDecision{}, fmt.Errorf("evaluate policy: %w", ctx.Err())
	}
	e := cachedDecision{uid: pod.UID, resourceVersion: pod.ResourceVersion, policyVersion: version, alertsVersion: alertsVersion,
		at: now, input: in, result: res, err: err}
	switch {
	case err != nil:
		c.metrics.PolicyEvaluations.WithLabelValues("error").Inc()
	case res.Decision.Capture:
		c.metrics.PolicyEvaluations.WithLabelValues("capture").Inc()
	default:
		c.metrics.PolicyEvaluations.WithLabelValues("no_capture").Inc()
	}
	c.decisions.put(pod.Namespace+"/"+pod.Name, e)
	return e, nil
}

// desire is the outcome of desired for one pod.
type desire struct {
	spec *capture.Spec // the capture the pod should have; nil: none
	// keep leaves the pod's policy capture as it is: the policy could not decide in time
	// (policy.ErrEvalTimeout), which says nothing about the pod. spec is nil then.
	keep bool
	// recorder is the pod's flight recorder (data.podcap.recorder); nil: none. keepRecorder
	// leaves it as it is, like keep.
	recorder     *capture.Spec
	keepRecorder bool
	problems     []*invalidRequest // to report once each
}

// desired decides the pod's capture and its flight recorder. An error is transient (retried)
// and changes nothing.
func (c *Controller) desired(ctx context.Context, pod *corev1.Pod) (desire, error) {
	want, e, err := c.desiredCaptureOf(ctx, pod)
	if err != nil || e == nil {
		return want, err
	}
	rec, keep, problems, err := c.desiredRecorder(ctx, pod, e)
	if err != nil {
		return desire{}, err
	}
	want.recorder, want.keepRecorder = rec, keep
	want.problems = append(want.problems, problems...)
	return want, nil
}

// desiredCaptureOf decides the pod's capture: the manual annotation (the seed rule, which
// works without any policy) wins when the policy allows manual captures for the pod;
// otherwise the policy's decision, validated. It returns the policy's result when it
// evaluated the policy (desiredRecorder reads it).
func (c *Controller) desiredCaptureOf(ctx context.Context, pod *corev1.Pod) (desire, *cachedDecision, error) {
	manualSpec, manualBad := c.desiredCapture(pod)
	if c.policy == nil || pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning {
		return desire{spec: manualSpec, problems: one(manualBad)}, nil, nil
	}
	manual := c.manualInput(pod)
	requested := manual.Requested
	e, err := c.evaluate(ctx, pod, manual)
	if err != nil {
		return desire{}, nil, err // the caller's cancellation: transient
	}
	d, err := c.decideCapture(ctx, pod, e, requested, manualSpec, manualBad)
	return d, &e, err
}

// decideCapture is desiredCaptureOf once the policy decided.
func (c *Controller) decideCapture(ctx context.Context, pod *corev1.Pod, e cachedDecision, requested bool, manualSpec *capture.Spec, manualBad *invalidRequest) (desire, error) {
	var problems []*invalidRequest
	if e.err != nil {
		// the engine's error names the policy version already, as `policy eval` prints it
		problems = append(problems, &invalidRequest{reason: metrics.PolicyErrorEval, eventReason: ReasonPolicyError,
			message: e.err.Error()})
	}
	// true whenever the policy could not say: a broken policy never stops the manual path,
	// but a veto it could read still holds when its decision is malformed
	allowed := e.result.ManualAllowed
	if requested {
		switch {
		case !allowed:
			problems = append(problems, &invalidRequest{reason: metrics.PolicyErrorVeto, eventReason: ReasonManualVetoed,
				message: fmt.Sprintf("the capture policy does not allow manual captures of this pod (data.podcap.manual_allowed is false); annotation %s ignored", c.cfg.AnnotationKey)})
		case manualBad != nil:
			return desire{problems: append(problems, manualBad)}, nil
		default:
			return desire{spec: manualSpec, problems: problems}, nil
		}
	}
	if errors.Is(e.err, policy.ErrEvalTimeout) {
		// transient: the policy did not say "no", so the pod's policy capture, if it has one,
		// stays as it is (a load spike must not end every capture of the node) and none
		// starts; a manual capture whose annotation is gone still stops. Reported, cached like
		// any result, evaluated again at the next resync or pod change.
		s, ok := c.captures.Status(pod.Namespace, pod.Name)
		keep := ok && s.Spec.Source != capture.SourceManual && s.Spec.UID == string(pod.UID) // policy or alert
		return desire{keep: keep, problems: problems}, nil
	}
	if e.err != nil || !e.result.Decision.Capture {
		return desire{problems: problems}, nil
	}
	spec, bad, err := c.policySpec(ctx, pod, e.result.Decision, e.input.Alerts)
	if err != nil {
		return desire{problems: problems}, err
	}
	return desire{spec: spec, problems: append(problems, bad...)}, nil
}

// ErrInvalidDecision wraps every violation CheckDecision finds.
var ErrInvalidDecision = errors.New("invalid decision")

// CheckDecision checks a capturing decision before it becomes a capture.Spec, and returns
// every violation in one error wrapping ErrInvalidDecision, one a line: the node's limits
// (policy.Decision.Validate), its alert fingerprints against alerts (the input.alerts it was
// computed from), then the snaplen and the filter by the capture package's rules
// (capture.CheckSnaplen, filters), which package policy cannot import: so each rule has one
// owner and a decision's filter meets exactly the checks of every capture. A capture that
// would run on the native engine (Engines.Of) must have a filter that engine runs exactly.
// Any other error is transient (tcpdump could not run). `podcap-agent policy eval` calls it too.
func CheckDecision(ctx context.Context, d policy.Decision, alerts []policy.Alert, l policy.Limits, filters FilterChecker, engines Engines) error {
	if !d.Capture {
		return nil
	}
	_, _, alertErr := alertTrigger(d, alerts)
	errs := []error{d.Validate(l), alertErr, capture.CheckSnaplen(d.Snaplen)}
	err := filters.Check(ctx, d.Filter)
	if err == nil {
		err = engines.checkNativeFilter(ctx, d) // only a filter tcpdump accepts
	}
	if err != nil {
		if !errors.Is(err, capture.ErrInvalidFilter) {
			return err
		}
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidDecision, err)
	}
	return nil
}

// policySpec validates a capturing decision and turns it into a capture.Spec; alerts are the
// input.alerts it was computed from. A decision naming alerts makes an alert capture.
func (c *Controller) policySpec(ctx context.Context, pod *corev1.Pod, d policy.Decision, alerts []policy.Alert) (*capture.Spec, []*invalidRequest, error) {
	if err := CheckDecision(ctx, d, alerts, c.cfg.Limits, c.filters, c.cfg.Engines); err != nil {
		if !errors.Is(err, ErrInvalidDecision) {
			return nil, nil, err // tcpdump could not run: transient, retried
		}
		return nil, []*invalidRequest{{reason: metrics.PolicyErrorInvalid, eventReason: ReasonInvalidDecision,
			message: fmt.Sprintf("capture decision refused: %v", err)}}, nil
	}
	fingerprints, trigger, _ := alertTrigger(d, alerts) // checked above
	if pod.Spec.HostNetwork && !c.cfg.AllowHostNetwork {
		return nil, []*invalidRequest{{reason: metrics.InvalidHostNetwork, message: hostNetworkRefusal}}, nil
	}
	spec := decisionSpec(pod, d, decisionSource(fingerprints))
	spec.Alerts, spec.Trigger, spec.Engine = fingerprints, trigger, c.cfg.Engines.Of(d)
	return spec, nil, nil
}

// decisionSpec is the capture.Spec of pod for d, a decision CheckDecision accepted (a
// capture's or a flight recorder's: a recorder's decision leaves the lifetime fields zero).
func decisionSpec(pod *corev1.Pod, d policy.Decision, source string) *capture.Spec {
	format := capture.FormatPcap
	if d.Format == policy.FormatPcapng {
		format = capture.FormatPcapng
	}
	return &capture.Spec{
		Namespace:   pod.Namespace,
		Pod:         pod.Name,
		UID:         string(pod.UID),
		Files:       d.Files,
		FileSize:    d.FileSizeBytes,
		Snaplen:     d.Snaplen,
		Filter:      d.Filter,
		Source:      source,
		HostNetwork: pod.Spec.HostNetwork,
		MaxDuration: time.Duration(d.MaxDuration),
		Reason:      d.Reason,
		Format:      format,
		StopGrace:   time.Duration(d.StopGrace),
		Cooldown:    time.Duration(d.Cooldown),
	}
}

// desiredRecorder decides the pod's flight recorder from the policy's result e: its own
// decision (data.podcap.recorder), checked like a capture decision, independent of the
// capture's. A timeout keeps a running recorder as it is (keep); a malformed recorder is a
// PolicyError, a refused one an InvalidPolicyDecision, and neither runs. An error is
// transient (tcpdump could not check the filter).
func (c *Controller) desiredRecorder(ctx context.Context, pod *corev1.Pod, e *cachedDecision) (spec *capture.Spec, keep bool, problems []*invalidRequest, err error) {
	if errors.Is(e.err, policy.ErrEvalTimeout) {
		s, ok := c.captures.RecorderStatus(pod.Namespace, pod.Name)
		return nil, ok && s.Spec.UID == string(pod.UID), nil, nil
	}
	if e.result.RecorderErr != nil {
		return nil, false, []*invalidRequest{{reason: metrics.PolicyErrorEval, eventReason: ReasonPolicyError,
			message: "flight recorder: " + e.result.RecorderErr.Error()}}, nil
	}
	d := e.result.Recorder
	if !d.Capture {
		return nil, false, nil, nil
	}
	if err := CheckDecision(ctx, d, nil, c.cfg.Limits, c.filters, c.cfg.Engines); err != nil {
		if !errors.Is(err, ErrInvalidDecision) {
			return nil, false, nil, err // tcpdump could not run: transient, retried
		}
		return nil, false, []*invalidRequest{{reason: metrics.PolicyErrorInvalid, eventReason: ReasonInvalidDecision,
			message: fmt.Sprintf("flight recorder decision refused: %v", err)}}, nil
	}
	if pod.Spec.HostNetwork && !c.cfg.AllowHostNetwork {
		return nil, false, []*invalidRequest{{reason: metrics.InvalidHostNetwork, message: "flight recorder: " + hostNetworkRefusal}}, nil
	}
	spec = decisionSpec(pod, d, capture.SourceRecorder)
	spec.Trigger, spec.Engine = "reason: "+d.Reason, c.cfg.Engines.Of(d)
	return spec, false, nil, nil
}

func one(p *invalidRequest) []*invalidRequest {
	if p == nil {
		return nil
	}
	return []*invalidRequest{p}
}

// Explain reports the policy input the agent builds for a pod of this node, the policy's
// result (as the agent last used it, or freshly evaluated), and the pod's capture.
//
// A fresh evaluation is cached for the pod's sync like any other, so it runs to its end even
// when the HTTP client goes away: ctx's cancellation is dropped and the policy's evaluation
// timeout bounds it.
func (c *Controller) Explain(ctx context.Context, namespace, name string) (*Explanation, error) {
	pod, err := c.pods.Pods(namespace).Get(name)
	if err != nil {
		return nil, err
	}
	e := &Explanation{Namespace: namespace, Pod: name}
	if c.policy != nil {
		manual := c.manualInput(pod)
		d, err := c.evaluate(context.WithoutCancel(ctx), pod, manual)
		if err != nil {
			return nil, err
		}
		e.PolicyVersion, e.Input = d.policyVersion, &d.input
		if d.err != nil {
			e.Error = d.err.Error()
		} else {
			e.Decision, e.ManualAllowed = &d.result.Decision, &d.result.ManualAllowed
		}
		if d.result.RecorderErr != nil {
			e.RecorderError = d.result.RecorderErr.Error()
		} else if d.err == nil {
			e.Recorder = &d.result.Recorder
		}
	}
	if s, ok := c.captures.Status(namespace, name); ok {
		e.Capture = captureStatus(s)
	}
	if s, ok := c.captures.RecorderStatus(namespace, name); ok {
		e.RecorderCapture = captureStatus(s)
	}
	return e, nil
}

// manualInput is the parsed annotation request, as the policy sees it.
func (c *Controller) manualInput(pod *corev1.Pod) policy.Manual {
	return ParseManual(pod, c.cfg.AnnotationKey, c.cfg.MaxFiles)
}

// ParseManual reads a pod's manual capture request (annotation key, "N" files from 1 to
// maxFiles) as the policy input shows it; `podcap-agent policy eval` uses it too.
func ParseManual(pod *corev1.Pod, key string, maxFiles int) policy.Manual {
	value, requested := pod.Annotations[key]
	m := policy.Manual{Requested: requested}
	if !requested {
		return m
	}
	n, bad := parseRingSize(key, value, maxFiles)
	if bad != nil {
		m.Error = bad.message
	} else {
		m.Files = n
	}
	return m
}
