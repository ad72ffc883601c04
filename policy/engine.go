package policy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"k8s.io/klog/v2"
)

// DefaultPollInterval is how often Run checks the policy directory for changes.
const DefaultPollInterval = 2 * time.Second

// DefaultEvalTimeout bounds one evaluation (Decide). The shipped rules decide in tens of
// microseconds; a rule that runs for a second is broken (a huge numbers.range, a runaway
// comprehension) and must not hold one of the agent's workers.
const DefaultEvalTimeout = time.Second

// NoPolicy is the reason of the decision when the policy directory holds no policy file.
const NoPolicy = "no policy"

// ErrNotLoaded is Decide's error while no policy has ever compiled: the directory has held a
// broken policy since the start. The error wraps it with the compile error.
var ErrNotLoaded = errors.New("no policy loaded")

// ErrEvalTimeout is Decide's error when the evaluation ran longer than the engine's
// evaluation timeout. It says nothing about the pod: the same input may decide in time on a
// less loaded node, so callers treat it as transient.
var ErrEvalTimeout = errors.New("policy evaluation timed out")

// query reads both values in one evaluation; the comprehensions are never undefined, so the
// result says whether each value is defined (an array of zero or one element). Measured
// against querying data.podcap whole and against two prepared queries (BenchmarkQueryShape).
const query = `decision := [d | d := data.podcap.decision]; manual_allowed := [m | m := data.podcap.manual_allowed]; recorder := [r | r := data.podcap.recorder]`

// Options configure an Engine.
type Options struct {
	// Dir holds the policy files. "" or a missing directory means no policy: no captures by
	// policy, manual captures allowed.
	Dir string
	// Logger logs reloads (their outcome is in Status too); the zero value logs nothing.
	Logger klog.Logger
	// PollInterval is how often Run looks for changes; 0 means DefaultPollInterval.
	PollInterval time.Duration
	// OnChange, if set, is called after every reload that changes the active policy version
	// (not for the first load in New), outside the engine's locks: the agent re-evaluates all
	// pods then. It must not block for long.
	OnChange func(version string)
	// Now is the clock of Status' timestamps; nil means time.Now.
	Now func() time.Time
	// EvalTimeout bounds each evaluation (Decide); 0 means DefaultEvalTimeout.
	EvalTimeout time.Duration
}

// Result is a decision with its context.
type Result struct {
	// Decision is what the policy decided; no capture when the policy decides nothing.
	Decision Decision
	// ManualAllowed is false when the policy vetoes the pod's manual annotation. It is true
	// when the policy cannot say (no policy, or an error reading this value): a broken policy
	// never stops the manual path.
	ManualAllowed bool
	// Recorder is data.podcap.recorder, the pod's flight recorder: a second decision,
	// independent of Decision (its own ring, beside any capture). No recorder when the policy
	// defines none, when it is malformed, or when the evaluation failed.
	Recorder Decision
	// RecorderErr says why data.podcap.recorder could not be read (its shape), nil if it
	// could. It is not Decide's error: a broken recorder rule leaves the pod's capture
	// decision alone, as the capture decision's errors leave the recorder alone.
	RecorderErr error
	// Version is the version of the policy that decided ("" when none ever loaded).
	Version string
}

// ReloadStatus is the state of the last reload, for metrics and the API.
type ReloadStatus struct {
	LastReloadSuccessful bool
	LastSuccess          time.Time // zero until a policy (or the empty set) loads
	LastError            string    // the last reload's error, "" after a success
	Version              string    // the active policy's version ("" when none ever loaded)
	Files                []string  // the active policy's files
}

// Engine evaluates the policy of one directory. It is safe for concurrent use: Decide runs
// concurrently with itself and with reloads.
type Engine struct {
	dir      string
	log      klog.Logger
	interval time.Duration
	onChange func(string)
	now      func() time.Time
	timeout  time.Duration // of one evaluation

	// active is the policy in use; nil until one loads.
	active atomic.Pointer[prepared]

	// reloadMu serialises reloads and protects seen.
	reloadMu sync.Mutex
	seen     string // what the last reload read: a version, or a read error

	// mu protects status.
	mu     sync.Mutex
	status ReloadStatus
}

// prepared is one compiled policy version.
type prepared struct {
	version string
	files   []string
	pq      *rego.PreparedEvalQuery // nil for the empty set
}

// New returns an engine with the policy of opts.Dir loaded. A policy that does not compile
// is not an error of New: the engine starts without one (Decide returns ErrNotLoaded), and
// Status and the log say why, so that a bad ConfigMap never stops the agent; Run picks up
// the fixed files.
func New(opts Options) (*Engine, error) {
	if opts.PollInterval < 0 {
		return nil, fmt.Errorf("policy poll interval %s: must not be negative", opts.PollInterval)
	}
	if opts.EvalTimeout < 0 {
		return nil, fmt.Errorf("policy evaluation timeout %s: must not be negative", opts.EvalTimeout)
	}
	e := &Engine{
		dir:      opts.Dir,
		log:      opts.Logger,
		interval: opts.PollInterval,
		now:      opts.Now,
		timeout:  opts.EvalTimeout,
	}
	if e.interval == 0 {
		e.interval = DefaultPollInterval
	}
	if e.timeout == 0 {
		e.timeout = DefaultEvalTimeout
	}
	if e.now == nil {
		e.now = time.Now
	}
	_ = e.reload(false) // logged and in Status
	// only now: nobody evaluated anything with the first version
	e.onChange = opts.OnChange
	return e, nil
}

// Decide evaluates the policy for one input, for at most the engine's evaluation timeout:
// an evaluation that runs longer returns an error wrapping ErrEvalTimeout. When ctx ends
// first, the error wraps ctx's error instead (context.Canceled or DeadlineExceeded): the
// caller gave up, the policy decided nothing.
func (e *Engine) Decide(ctx context.Context, in Input) (Result, error) {
	p := e.active.Load()
	r := Result{Decision: noDecision(), Recorder: noRecorder(), ManualAllowed: true}
	if p == nil {
		return r, fmt.Errorf("%w: %s", ErrNotLoaded, e.Status().LastError)
	}
	r.Version = p.version
	if p.pq == nil {
		r.Decision.Reason = NoPolicy
		return r, nil
	}
	evalCtx, cancel := context.WithTimeoutCause(ctx, e.timeout, ErrEvalTimeout)
	defer cancel()
	// OPA stops at its next step (and inside numbers.range) once evalCtx ends
	rs, err := p.pq.Eval(evalCtx, rego.EvalParsedInput(in.Value()))
	switch {
	case err == nil:
	case ctx.Err() != nil: // the caller's cancellation or deadline, not the policy's
		return r, fmt.Errorf("evaluate policy %s: %w", p.version, ctx.Err())
	case errors.Is(context.Cause(evalCtx), ErrEvalTimeout):
		return r, fmt.Errorf("evaluate policy %s: %w after %s", p.version, ErrEvalTimeout, e.timeout)
	default:
		return r, fmt.Errorf("evaluate policy %s: %w", p.version, err)
	}
	if len(rs) != 1 {
		return r, fmt.Errorf("evaluate policy %s: %d results, want 1", p.version, len(rs))
	}
	var errs []error
	if m, ok := rs[0].Bindings["manual_allowed"].([]any); ok && len(m) == 1 {
		if allowed, ok := m[0].(bool); ok {
			r.ManualAllowed = allowed
		} else {
			errs = append(errs, fmt.Errorf("manual_allowed: want true or false, got %s", describe(m[0])))
		}
	}
	if d, ok := rs[0].Bindings["decision"].([]any); ok && len(d) == 1 {
		if r.Decision, err = DecodeDecision(d[0]); err != nil {
			r.Decision = noDecision()
			errs = append(errs, err)
		}
	}
	if rec, ok := rs[0].Bindings["recorder"].([]any); ok && len(rec) == 1 {
		if r.Recorder, err = DecodeRecorder(rec[0]); err != nil {
			r.Recorder = noRecorder()
			r.RecorderErr = fmt.Errorf("policy %s: %w", p.version, err)
		}
	}
	if len(errs) > 0 {
		return r, fmt.Errorf("policy %s: %w", p.version, errors.Join(errs...))
	}
	return r, nil
}

// Version is the active policy's version: a hash of its files' names and contents, so it
// changes exactly when they do. "" while no policy ever loaded.
func (e *Engine) Version() string {
	if p := e.active.Load(); p != nil {
		return p.version
	}
	return ""
}

// Status is the state of the last reload.
func (e *Engine) Status() ReloadStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.status
	s.Files = append([]string(nil), s.Files...)
	return s
}

// Reload reads and compiles the policy files again and makes them the active policy if they
// compile; otherwise the active policy stays and the error is returned (and in Status).
func (e *Engine) Reload() error { return e.reload(true) }

// reload loads the directory; unless force, only when what it reads differs from the last
// time (Run's polling).
func (e *Engine) reload(force bool) error {
	e.reloadMu.Lock()
	files, err := readDir(e.dir, false)
	seen := "error: " + fmt.Sprint(err)
	if err == nil {
		seen = version(files)
	}
	if !force && seen == e.seen {
		e.reloadMu.Unlock()
		return nil
	}
	e.seen = seen
	var p *prepared
	if err == nil {
		p, err = prepare(files)
	}
	old := e.active.Load()
	if err == nil {
		e.active.Store(p)
	}
	e.record(p, err)
	e.reloadMu.Unlock()

	if err != nil {
		active := ""
		if old != nil {
			active = old.version
		}
		e.log.Error(err, "Policy reload failed, keeping the active policy", "dir", e.dir, "activeVersion", active)
		return fmt.Errorf("reload policy: %w", err)
	}
	e.log.Info("Policy loaded", "dir", e.dir, "version", p.version, "files", p.files)
	if (old == nil || old.version != p.version) && e.onChange != nil {
		e.onChange(p.version)
	}
	return nil
}

// record updates the status after a reload that made p active, or failed with err.
func (e *Engine) record(p *prepared, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status.LastReloadSuccessful = err == nil
	if err != nil {
		e.status.LastError = err.Error()
		return
	}
	e.status.LastError = ""
	e.status.LastSuccess = e.now()
	e.status.Version = p.version
	e.status.Files = p.files
}

// prepare compiles the files and prepares the query; the empty set prepares nothing.
func prepare(files []source) (*prepared, error) {
	p := &prepared{version: version(files), files: make([]string, len(files))}
	for i, f := range files {
		p.files[i] = f.name
	}
	if len(files) == 0 {
		return p, nil
	}
	c, err := compile(files)
	if err != nil {
		return nil, err
	}
	pq, err := prepareQuery(c, query)
	if err != nil {
		return nil, err
	}
	p.pq = pq
	return p, nil
}

// prepareQuery prepares q on the compiled policy c.
func prepareQuery(c *ast.Compiler, q string) (*rego.PreparedEvalQuery, error) {
	body, err := ast.ParseBodyWithOpts(q, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("parse query: %w", err)
	}
	pq, err := rego.New(
		rego.ParsedQuery(body),
		rego.Compiler(c),
		rego.SetRegoVersion(ast.RegoV1),
		rego.Strict(true),
	).PrepareForEval(context.Background())
	if err != nil {
		return nil, fmt.Errorf("prepare policy query: %w", err)
	}
	return &pq, nil
}
