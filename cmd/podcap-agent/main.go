// Command podcap-agent is podcap's node agent: it captures the traffic of the pods on its
// node when they ask for it (annotation `tcpdump.antrea.io: "N"`), inside each pod's network
// namespace, into a ring of N files of 1 MB.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/podcap/podcap/agent"
	"github.com/podcap/podcap/agent/alerts"
	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/native"
	"github.com/podcap/podcap/agent/capture/tcpdump"
	"github.com/podcap/podcap/agent/cri"
	"github.com/podcap/podcap/agent/metrics"
	"github.com/podcap/podcap/agent/version"
	"github.com/podcap/podcap/policy"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "policy":
			os.Exit(runPolicy(os.Args[2:], os.Stdout, os.Stderr))
		case "version":
			os.Exit(runVersion(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	var o Options
	fs := flag.NewFlagSet("podcap-agent", flag.ExitOnError)
	o.AddFlags(fs)
	// the log flags of Kubernetes components: -v, --vmodule, --logging-format=text|json, ...
	logCfg := logsapi.NewLoggingConfiguration()
	logsapi.AddGoFlags(logCfg, fs)
	printVersion := fs.Bool("version", false, "print the version, commit, build date and Go release, and exit (as `podcap-agent version`)")
	_ = fs.Parse(os.Args[1:]) // ExitOnError
	o.Args = fs.Args()
	if *printVersion {
		os.Exit(runVersion(nil, os.Stdout, os.Stderr))
	}
	err := o.Validate()
	if logErr := logsapi.ValidateAndApply(logCfg, nil); logErr != nil { // applied only when valid
		err = errors.Join(err, fmt.Errorf("--logging-format, -v, --vmodule: %w", logErr))
	}
	if err != nil {
		// one line per problem, each naming its flag, before anything starts
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(os.Stderr, "podcap-agent: %s\n", line)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = klog.NewContext(ctx, klog.Background())
	if err := run(ctx, &o); err != nil {
		klog.FromContext(ctx).Error(err, "Agent failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func criDefaults() []string { return cri.DefaultEndpoints }

// run wires the agent's parts and runs them until ctx ends or one of them fails.
func run(ctx context.Context, o *Options) error {
	log := klog.FromContext(ctx)
	// first: a bad key pair fails the start before anything else runs
	transport, tlsMode, err := apiTransport(log, o)
	if err != nil {
		return err
	}
	kcfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubeClient(kcfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	metrics.RegisterAPITLS(reg, tlsMode)
	build := version.Get()
	metrics.RegisterBuildInfo(reg, build.Version, build.Commit, build.GoVersion)

	runtime, endpoint, runtimeAnswered, err := dialRuntime(ctx, o.CRIEndpoint)
	if err != nil {
		return err
	}
	defer runtime.Close()
	recorder, stopEvents := eventRecorder(ctx, client, o.NodeName)
	defer stopEvents()
	captures, err := newCaptureManager(log, o, runtime, recorder, m, metrics.NewStreams(reg))
	if err != nil {
		return err
	}
	var ctrl *agent.Controller // set before the store runs: its changes re-evaluate the node's pods
	store, err := newAlertStore(log, o, kcfg, reg, func() { ctrl.EnqueueAll() })
	if err != nil {
		return err
	}
	ctrl, rules, err := newController(log, o, client, captures, recorder, m, reg, store)
	if err != nil {
		return err
	}
	var rec alerts.Recorder // nil: the webhook is off
	if store != nil {
		rec = store
	}
	servers, err := newServers(log, o, kcfg, reg, ctrl, captures, transport, rec)
	if err != nil {
		return err
	}

	log.Info("Starting podcap agent", "version", build.Version, "commit", build.Commit, "buildDate", build.BuildDate,
		"goVersion", build.GoVersion, "node", o.NodeName, "criEndpoint", endpoint, "captureDir", o.CaptureDir,
		"annotationKey", o.AnnotationKey, "maxFiles", o.MaxFiles, "maxConcurrentCaptures", o.MaxConcurrent)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return captures.Run(gctx) })
	g.Go(func() error { return ctrl.Run(gctx) })
	// start-up problems are logged at the default verbosity, once per back-off step, until solved
	g.Go(func() error {
		reportAPIServer(gctx, log, clock.RealClock{}, kcfg.Host, o.Kubeconfig, ctrl.Synced, listNodePods(client, o.NodeName))
		return nil
	})
	if !runtimeAnswered {
		g.Go(func() error { reportRuntime(gctx, log, clock.RealClock{}, endpoint, runtime.Check); return nil })
	}
	for _, srv := range servers {
		g.Go(func() error { return srv.Run(gctx) })
	}
	if store != nil {
		g.Go(func() error { return store.Run(gctx) })
	}
	if rules != nil {
		g.Go(func() error { return rules.Run(gctx) })
		g.Go(func() error { return reloadOnSIGHUP(gctx, rules) })
	}
	err = g.Wait()
	log.Info("Agent stopped")
	return err
}

// kubeClient is the clientset of the agent's pods and Events.
func kubeClient(kcfg *rest.Config) (kubernetes.Interface, error) {
	cfg := rest.CopyConfig(kcfg)
	cfg.UserAgent = "podcap-agent"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}

// Alert store client rate: a storm of 1,000 alerts in 10 s is 100 applies a second on the
// agent Alertmanager reached, and one notification holds up to 200 alerts. Its own client, so
// that a storm never delays the pod informer or the Events.
const (
	alertClientQPS   = 100
	alertClientBurst = 200
)

// newAlertStore builds the store of CaptureAlert objects in --alert-namespace; nil when
// alerts are off (--alert-namespace "").
func newAlertStore(log klog.Logger, o *Options, kcfg *rest.Config, reg prometheus.Registerer, onChange func()) (*alerts.Store, error) {
	if o.AlertNamespace == "" {
		log.Info("Alerts off: no --alert-namespace; input.alerts stays empty and the webhook answers 404")
		return nil, nil
	}
	cfg := rest.CopyConfig(kcfg)
	cfg.UserAgent = "podcap-agent/alerts"
	cfg.QPS, cfg.Burst = alertClientQPS, alertClientBurst
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("alert store client: %w", err)
	}
	store, err := alerts.NewStore(dyn, alerts.StoreOptions{
		Namespace: o.AlertNamespace, Node: o.NodeName, MaxActive: o.MaxAlerts, TTL: o.AlertTTL,
		Retention: o.AlertRetention, Logger: log.WithName("alerts"), Registerer: reg, OnChange: onChange,
	})
	if err != nil {
		return nil, fmt.Errorf("alert store: %w", err)
	}
	return store, nil
}

// dialRuntime connects to the CRI socket: endpoint, or the first of the default ones that
// exists. A runtime that does not answer yet is logged (answered false), not an error: run
// then reports it once per back-off step until it answers (reportRuntime).
func dialRuntime(ctx context.Context, endpoint string) (_ *cri.Client, _ string, answered bool, _ error) {
	if endpoint == "" {
		var err error
		if endpoint, err = cri.PickEndpoint(cri.DefaultEndpoints, os.Stat); err != nil {
			return nil, "", false, fmt.Errorf("find the CRI socket (set --cri-endpoint): %w", err)
		}
	}
	runtime, err := cri.Dial(endpoint)
	if err != nil {
		return nil, "", false, fmt.Errorf("CRI client for %s (--cri-endpoint): %w", endpoint, err)
	}
	if err := runtime.Check(ctx); err != nil {
		// not fatal: captures fail with Events and metrics and retry until the runtime answers
		klog.FromContext(ctx).Error(err, runtimeMessage, "endpoint", endpoint, "check", runtimeCheck)
		return runtime, endpoint, false, nil
	}
	return runtime, endpoint, true, nil
}

// eventRecorder records Events through the core API as the node's podcap-agent; stop flushes
// and ends the broadcaster.
func eventRecorder(ctx context.Context, client kubernetes.Interface, node string) (_ record.EventRecorder, stop func()) {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(3)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "podcap-agent", Host: node}), broadcaster.Shutdown
}

// newCaptureManager builds the capture engines and the capture manager over them. The engine
// of --engine must build; the other one may fail to (no nsenter on a native-only node, ...):
// the agent then runs without it, says why in its log, and refuses the captures that ask for
// it with that reason (capture.ErrEngineUnavailable), never running them on the other one.
func newCaptureManager(log klog.Logger, o *Options, runtime *cri.Client, recorder record.EventRecorder, m *metrics.Metrics,
	streams *metrics.Streams) (*capture.Manager, error) {
	engines, errs := map[string]capture.Engine{}, map[string]error{}
	if e, err := tcpdump.New(tcpdump.Config{NsenterPath: o.NsenterPath, TcpdumpPath: o.TcpdumpPath, NetNSDir: o.NetNSDir}); err != nil {
		errs[capture.EngineTcpdump] = err
	} else {
		engines[capture.EngineTcpdump] = e
	}
	if e, err := native.New(native.Config{NetNSDir: o.NetNSDir, RingBytes: int(o.NativeBufferBytes), TcpdumpPath: o.TcpdumpPath}); err != nil {
		errs[capture.EngineNative] = err
	} else {
		engines[capture.EngineNative] = e
	}
	if err := errs[o.Engine]; err != nil {
		return nil, fmt.Errorf("capture engine %s (--engine): %w", o.Engine, err)
	}
	for name, err := range errs {
		log.Error(err, "Capture engine unavailable: captures that ask for it are refused", "engine", name)
	}
	return capture.NewManager(capture.Config{
		Dir:              o.CaptureDir,
		MaxConcurrent:    o.MaxConcurrent,
		Engines:          engines,
		DefaultEngine:    o.Engine,
		EngineErrors:     errs,
		NativeRingBytes:  o.NativeBufferBytes,
		NativeRingBudget: o.NativeBufferBudget,
		Resolver:         runtime,
		Notifier:         agent.PodEvents{Recorder: recorder},
		Metrics:          m,
		Retention:        capture.Retention{MaxAge: o.RetentionMaxAge, MaxBytes: o.RetentionMaxBytes, Interval: o.RetentionInterval},
		MinFreeBytes:     o.MinFreeBytes,
		Streams: capture.StreamConfig{MaxReaders: o.MaxStreamReaders, MaxReadersPerCapture: o.MaxStreamReadersPerCapture,
			BufferBytes: o.StreamBufferBytes, Metrics: streams},
		NodeName: o.NodeName,
		Version:  version.Get().Version,
	})
}

// newController builds the controller and, with --policy-dir, the policy engine it consults
// (rules is nil without one) and the policy's reload metrics.
func newController(log klog.Logger, o *Options, client kubernetes.Interface, captures *capture.Manager,
	recorder record.EventRecorder, m *metrics.Metrics, reg prometheus.Registerer, store *alerts.Store) (ctrl *agent.Controller, rules *policy.Engine, err error) {
	filters, engines := o.Checkers() // the same as policy eval's
	cfg := agent.Config{
		NodeName:         o.NodeName,
		AnnotationKey:    o.AnnotationKey,
		MaxFiles:         o.MaxFiles,
		AllowHostNetwork: o.AllowHostNetwork,
		Limits:           o.Limits(),
		Filters:          filters,
		Engines:          engines,
	}
	if store != nil { // a nil *Store in the interface would not be nil
		cfg.Alerts = store
	}
	if o.PolicyDir != "" {
		rules, err = policy.New(policy.Options{
			Dir:          o.PolicyDir,
			Logger:       log.WithName("policy"),
			PollInterval: o.PolicyPollInterval,
			EvalTimeout:  o.PolicyEvalTimeout,
			OnChange:     func(string) { ctrl.EnqueueAll() }, // ctrl is set before Run starts the engine
		})
		if err != nil {
			return nil, nil, fmt.Errorf("policy: %w", err)
		}
		cfg.Policy = rules
		metrics.RegisterPolicyStatus(reg, func() (bool, time.Time) {
			st := rules.Status()
			return st.LastReloadSuccessful, st.LastSuccess
		})
	}
	if ctrl, err = agent.NewController(client, captures, recorder, m, cfg); err != nil {
		return nil, nil, err
	}
	return ctrl, rules, nil
}

// reloadOnSIGHUP reloads the policy when the agent gets SIGHUP.
func reloadOnSIGHUP(ctx context.Context, rules *policy.Engine) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			if err := rules.Reload(); err != nil {
				klog.FromContext(ctx).Error(err, "Policy reload on SIGHUP failed; the last good policy stays")
			}
		}
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster config (or set --kubeconfig): %w", err)
	}
	return cfg, nil
}
