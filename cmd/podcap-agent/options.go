package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podcap/podcap/agent"
	"github.com/podcap/podcap/agent/alerts"
	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/native"
	"github.com/podcap/podcap/agent/capture/tcpdump"
	"github.com/podcap/podcap/policy"
)

// Options are the agent's flags.
type Options struct {
	// Args are the positional arguments left after the flags: the agent takes none, so any
	// is an error (a mistyped subcommand or a flag value split from its flag).
	Args []string

	NodeName         string
	Kubeconfig       string
	CRIEndpoint      string
	CaptureDir       string
	MaxConcurrent    int
	ListenAddress    string // health and metrics, plain HTTP
	AllowHostNetwork bool
	NsenterPath      string
	NetNSDir         string

	// DecisionOptions: the flags `policy eval` shares (annotation key, limits, tcpdump,
	// engine, evaluation timeout).
	DecisionOptions

	// NativeBufferBytes is the kernel ring of each native capture, NativeBufferBudget the
	// bound of all of them together.
	NativeBufferBytes  int64
	NativeBufferBudget int64

	PolicyDir          string
	PolicyPollInterval time.Duration
	RetentionMaxAge    time.Duration
	RetentionMaxBytes  int64
	MinFreeBytes       int64
	RetentionInterval  time.Duration

	// The API authenticates callers with TokenReview and authorises them with
	// SubjectAccessReview (get pods/capture in the namespace). APITokenFile adds an opt-in
	// static token that grants everything; APIClientCAFile accepts client certificates of
	// that CA (CN the user, O the groups). MetricsRequireAuth moves /metrics to the API
	// server, behind the same authentication and `get /metrics` (nonResourceURLs).
	APITokenFile       string
	APIClientCAFile    string
	MetricsRequireAuth bool

	// Live streams (GET /api/v1/captures/{namespace}/{pod}/stream): readers per node and per
	// capture, and what a reader may fall behind by before it is cut off.
	MaxStreamReaders           int
	MaxStreamReadersPerCapture int
	StreamBufferBytes          int64

	// APIListenAddress serves the API over TLS: with TLSCertFile and TLSPrivateKeyFile (both
	// or neither), else with a certificate made at start for NodeName, NodeIP and localhost;
	// over plain HTTP only with InsecureServeAPIOverHTTP.
	APIListenAddress         string
	TLSCertFile              string
	TLSPrivateKeyFile        string
	NodeIP                   string
	InsecureServeAPIOverHTTP bool

	// The Alertmanager webhook (POST /api/v1/alerts on the API server): a bearer token and/or
	// client certificates of this CA bundle; neither, and the webhook is off.
	WebhookTokenFile    string
	WebhookClientCAFile string

	// Alerts are shared as CaptureAlert objects in AlertNamespace ("" turns the alert store,
	// input.alerts and the webhook off).
	AlertNamespace string
	AlertTTL       time.Duration
	AlertRetention time.Duration
	MaxAlerts      int
}

// DecisionOptions are the flags that bound what a capture may ask for and how a decision is
// checked. The agent and `podcap-agent policy eval` register, default and validate them with
// this one type, so that policy eval refuses exactly what the agent refuses.
type DecisionOptions struct {
	AnnotationKey      string
	MaxFiles           int
	MaxFileSizeBytes   int64
	MaxCaptureDuration time.Duration
	PolicyEvalTimeout  time.Duration
	TcpdumpPath        string
	// Engine is the capture engine of manual captures and of decisions that name none
	// (capture.EngineTcpdump or capture.EngineNative).
	Engine string
}

// AddFlags registers the decision flags on fs.
func (d *DecisionOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&d.AnnotationKey, "annotation-key", agent.DefaultAnnotationKey, `pod annotation that requests a capture: "N" keeps a ring of N files of 1 MB`)
	fs.IntVar(&d.MaxFiles, "max-files", 64, fmt.Sprintf("largest ring size N a pod may ask for (at most %d)", maxMaxFiles))
	fs.Int64Var(&d.MaxFileSizeBytes, "max-file-size-bytes", 100_000_000, "largest ring file a policy decision may ask for (at least 65536)")
	fs.DurationVar(&d.MaxCaptureDuration, "max-capture-duration", 24*time.Hour, "longest max_duration a policy decision may ask for")
	fs.DurationVar(&d.PolicyEvalTimeout, "policy-eval-timeout", policy.DefaultEvalTimeout, fmt.Sprintf("longest evaluation of the policy for one pod (at most %s); a longer one is a PolicyError for the pod", maxPolicyEvalTimeout))
	fs.StringVar(&d.TcpdumpPath, "tcpdump", "tcpdump", "tcpdump binary (path or name on PATH); it also compiles and checks every capture filter (tcpdump -d, which opens no interface)")
	fs.StringVar(&d.Engine, "engine", capture.EngineTcpdump, "capture engine of manual captures and of policy decisions that name none: tcpdump (nsenter + a tcpdump process per capture, the original tool's way) or native (an AF_PACKET TPACKET_V3 ring read by the agent, for high packet rates)")
}

// Validate reports every invalid decision flag.
func (d *DecisionOptions) Validate() []error {
	var errs []error
	if msgs := validation.IsQualifiedName(d.AnnotationKey); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--annotation-key %q: %s", d.AnnotationKey, strings.Join(msgs, "; ")))
	}
	if d.MaxFiles < 1 || d.MaxFiles > maxMaxFiles {
		errs = append(errs, fmt.Errorf("--max-files %d must be from 1 to %d", d.MaxFiles, maxMaxFiles))
	}
	if d.MaxFileSizeBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("--max-file-size-bytes %d must be at least 65536", d.MaxFileSizeBytes))
	}
	if d.MaxCaptureDuration <= 0 {
		errs = append(errs, fmt.Errorf("--max-capture-duration %s must be positive", d.MaxCaptureDuration))
	}
	if d.PolicyEvalTimeout <= 0 || d.PolicyEvalTimeout > maxPolicyEvalTimeout {
		errs = append(errs, fmt.Errorf("--policy-eval-timeout %s must be positive and at most %s", d.PolicyEvalTimeout, maxPolicyEvalTimeout))
	}
	if d.TcpdumpPath == "" {
		errs = append(errs, errors.New("--tcpdump must name the tcpdump binary"))
	}
	if err := checkEngine(d.Engine); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// Limits are the node's limits on decisions (input.limits, and what a decision may ask for).
func (d *DecisionOptions) Limits() policy.Limits {
	return policy.Limits{MaxFiles: d.MaxFiles, MaxFileSizeBytes: d.MaxFileSizeBytes, MaxDuration: d.MaxCaptureDuration}
}

// Checkers are the filter checker and the engines a decision is checked with.
func (d *DecisionOptions) Checkers() (*capture.FilterChecker, agent.Engines) {
	return capture.NewFilterChecker(d.TcpdumpPath),
		agent.Engines{Default: d.Engine, NativeFilters: native.NewFilterChecker(d.TcpdumpPath)}
}

// Limits on flag values: the ring files of every capture must fit a node's disk.
const (
	maxMaxFiles      = 1024
	maxMaxConcurrent = 256
	// an evaluation holds one of the controller's two workers; beyond this a rule is broken
	maxPolicyEvalTimeout = 10 * time.Second
	// every agent holds every active alert and each is an object in the API server
	maxMaxAlerts = 10000
	// every stream reader may hold its buffer: 256 readers of 64 MiB is the agent's bound
	maxStreamReaders     = 256
	maxStreamBufferBytes = 64 << 20
	// defaultNativeBufferBudget holds 16 native captures at the default ring size: the
	// default --max-concurrent-captures.
	defaultNativeBufferBudget = 512 << 20
)

// envOr is the environment variable's value, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// AddFlags registers the options on fs with their defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	o.DecisionOptions.AddFlags(fs)
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "name of this node; only its pods are watched (default: env NODE_NAME)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty means in-cluster configuration")
	fs.StringVar(&o.CRIEndpoint, "cri-endpoint", "", "CRI runtime socket (unix:///path or /path); empty means the first that exists of "+strings.Join(criDefaults(), ", "))
	fs.StringVar(&o.CaptureDir, "capture-dir", "/var/lib/podcap/captures", "directory for capture files, one sub-directory per namespace/pod")
	fs.IntVar(&o.MaxConcurrent, "max-concurrent-captures", 16, "captures running at once on this node; more wait until one ends")
	fs.StringVar(&o.ListenAddress, "listen-address", ":9695", "address of the plain HTTP server of /healthz, /readyz and /metrics (no credentials cross it)")
	fs.BoolVar(&o.AllowHostNetwork, "allow-host-network", false, "allow captures of hostNetwork pods (they see the whole node's traffic)")
	fs.StringVar(&o.NsenterPath, "nsenter", "nsenter", "nsenter binary (path or name on PATH)")
	fs.Int64Var(&o.NativeBufferBytes, "native-buffer-bytes", native.DefaultRingBytes, fmt.Sprintf("kernel ring of each capture on the native engine, in bytes (from %d to %d)", native.MinRingBytes, native.MaxRingBytes))
	fs.Int64Var(&o.NativeBufferBudget, "native-buffer-budget", defaultNativeBufferBudget, "bytes of kernel ring all native captures of the node may hold together (at least --native-buffer-bytes); a native capture beyond it waits until one ends (podcap_captures_queued{reason=\"native_buffer\"})")
	fs.StringVar(&o.NetNSDir, "netns-dir", tcpdump.DefaultNetNSDir, "directory where the container runtime pins pods' network namespaces, as it names it; only files under it are entered")
	fs.StringVar(&o.PolicyDir, "policy-dir", "", "directory of Rego capture policies (*.rego, package podcap); empty: manual captures only")
	fs.DurationVar(&o.PolicyPollInterval, "policy-poll-interval", 2*time.Second, "how often the policy directory is checked for changes (SIGHUP reloads at once)")
	fs.DurationVar(&o.RetentionMaxAge, "retention-max-age", 24*time.Hour, "finished policy captures older than this are deleted")
	fs.DurationVar(&o.RetentionInterval, "retention-interval", time.Minute, "how often the retention rules are applied (also after every policy capture ends)")
	fs.Int64Var(&o.RetentionMaxBytes, "retention-max-bytes", 1<<30, "byte budget of all capture files on the node: each running capture reserves its worst case (files × (file size + snaplen)) against it, a capture that does not fit waits, and finished policy captures are deleted oldest first to make room")
	fs.Int64Var(&o.MinFreeBytes, "min-free-bytes", 1<<30, "free space captures leave on the capture directory's file system: no ring file is created that could take it below this (the capture fails with a CaptureFailed Event until space is back)")
	fs.StringVar(&o.APITokenFile, "api-token-file", "", "opt-in: file holding a static bearer token of the HTTP API (/api/v1/...) that grants everything, for use without Kubernetes credentials (at least 16 bytes; empty, missing or shorter: no static token). Other callers are authenticated by TokenReview and authorised by SubjectAccessReview: get pods/capture in the pod's namespace")
	fs.StringVar(&o.APIClientCAFile, "api-client-ca-file", "", "optional PEM bundle of the CAs (e.g. the cluster's client CA) whose client certificates authenticate API callers: CN is the user, O the groups, then authorised by SubjectAccessReview; for users whose kubeconfig holds a client certificate instead of a token. Reloaded when it changes")
	fs.BoolVar(&o.MetricsRequireAuth, "metrics-require-auth", false, "serve /metrics on the API server (HTTPS, --api-listen-address) behind the API's authentication and a SubjectAccessReview of get on the non-resource URL /metrics; the plain HTTP server then keeps only /healthz and /readyz")
	fs.IntVar(&o.MaxStreamReaders, "max-stream-readers", capture.DefaultMaxStreamReaders, "live pcap stream readers on this node at once; more are refused (503)")
	fs.IntVar(&o.MaxStreamReadersPerCapture, "max-stream-readers-per-capture", capture.DefaultMaxStreamReadersPerCapture, "live pcap stream readers of one capture at once; more are refused (429)")
	fs.Int64Var(&o.StreamBufferBytes, "stream-buffer-bytes", capture.DefaultStreamBufferBytes, fmt.Sprintf("bytes a live stream reader may fall behind by before it is cut off (podcap_stream_readers_cut_total); at least %d", capture.MinStreamBufferBytes))
	fs.StringVar(&o.APIListenAddress, "api-listen-address", ":9696", "address of the HTTPS server of the API (/api/v1/...), the endpoints that take a bearer token")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", "", "PEM certificate (then its chain) of the API server, with --tls-private-key-file; reloaded when the files change. Neither: a self-signed certificate is made at start (its fingerprints are logged)")
	fs.StringVar(&o.TLSPrivateKeyFile, "tls-private-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&o.NodeIP, "node-ip", os.Getenv("NODE_IP"), "this node's IP address, a name of the self-signed certificate besides --node-name and localhost (default: env NODE_IP)")
	fs.StringVar(&o.WebhookTokenFile, "webhook-token-file", "", "file holding the bearer token Alertmanager sends to the webhook (POST /api/v1/alerts on --api-listen-address), at least 16 bytes; re-read when it changes (Secret rotation). Missing or too short: the webhook is off")
	fs.StringVar(&o.AlertNamespace, "alert-namespace", envOr("POD_NAMESPACE", "podcap-system"), "namespace of the CaptureAlert objects through which the agents share Alertmanager's alerts (default: env POD_NAMESPACE, else podcap-system); \"\" turns alerts off (no input.alerts, webhook off)")
	fs.DurationVar(&o.AlertTTL, "alert-ttl", alerts.DefaultAlertTTL, "a firing alert not notified again for this long stops being active (a lost resolve); must exceed Alertmanager's repeat_interval + group_interval")
	fs.DurationVar(&o.AlertRetention, "alert-retention", alerts.DefaultAlertRetention, "CaptureAlert objects inactive for this long are deleted (by any agent)")
	fs.IntVar(&o.MaxAlerts, "max-alerts", alerts.DefaultMaxActive, "active alerts held; a new firing alert beyond this is refused and counted (podcap_alerts_refused_total)")
	fs.StringVar(&o.WebhookClientCAFile, "webhook-client-ca-file", "", "PEM bundle of the CAs whose client certificates the webhook requires (mTLS, Alertmanager's tls_config cert_file); with --webhook-token-file both are required. Other API routes keep bearer tokens only")
	fs.BoolVar(&o.InsecureServeAPIOverHTTP, "insecure-serve-api-over-http", false, "INSECURE: serve the API over plain HTTP, so that its bearer token crosses the network in cleartext (logged at start, metric podcap_api_tls_info{tls=\"off\"})")
}

// Validate reports every invalid option at once.
func (o *Options) Validate() error {
	var errs []error
	if o.NodeName == "" {
		errs = append(errs, errors.New("--node-name (or env NODE_NAME) is required"))
	}
	if !filepath.IsAbs(o.CaptureDir) {
		errs = append(errs, fmt.Errorf("--capture-dir %q must be an absolute path", o.CaptureDir))
	}
	errs = append(errs, o.DecisionOptions.Validate()...)
	if o.MaxConcurrent < 1 || o.MaxConcurrent > maxMaxConcurrent {
		errs = append(errs, fmt.Errorf("--max-concurrent-captures %d must be from 1 to %d", o.MaxConcurrent, maxMaxConcurrent))
	}
	if !filepath.IsAbs(o.NetNSDir) || filepath.Clean(o.NetNSDir) != o.NetNSDir {
		errs = append(errs, fmt.Errorf("--netns-dir %q must be a clean absolute path", o.NetNSDir))
	}
	if o.PolicyDir != "" && !filepath.IsAbs(o.PolicyDir) {
		errs = append(errs, fmt.Errorf("--policy-dir %q must be an absolute path", o.PolicyDir))
	}
	if o.PolicyPollInterval <= 0 || o.RetentionMaxAge <= 0 || o.RetentionInterval <= 0 {
		errs = append(errs, errors.New("--policy-poll-interval, --retention-max-age and --retention-interval must be positive"))
	}
	if o.AlertNamespace != "" {
		if msgs := validation.IsDNS1123Label(o.AlertNamespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--alert-namespace %q: %s", o.AlertNamespace, strings.Join(msgs, "; ")))
		}
	}
	if o.AlertTTL < time.Minute || o.AlertRetention <= 0 {
		errs = append(errs, fmt.Errorf("--alert-ttl %s must be at least 1m and --alert-retention %s positive", o.AlertTTL, o.AlertRetention))
	}
	if o.MaxAlerts < 1 || o.MaxAlerts > maxMaxAlerts {
		errs = append(errs, fmt.Errorf("--max-alerts %d must be from 1 to %d", o.MaxAlerts, maxMaxAlerts))
	}
	if o.RetentionMaxBytes <= 0 || o.MinFreeBytes < 0 {
		errs = append(errs, errors.New("--retention-max-bytes must be positive and --min-free-bytes not negative"))
	}
	if o.MaxStreamReaders < 1 || o.MaxStreamReaders > maxStreamReaders || o.MaxStreamReadersPerCapture < 1 ||
		o.StreamBufferBytes < capture.MinStreamBufferBytes || o.StreamBufferBytes > maxStreamBufferBytes {
		errs = append(errs, fmt.Errorf("--max-stream-readers must be from 1 to %d, --max-stream-readers-per-capture at least 1, --stream-buffer-bytes from %d to %d",
			maxStreamReaders, capture.MinStreamBufferBytes, maxStreamBufferBytes))
	}
	errs = append(errs, o.validateEngine()...)
	errs = append(errs, o.validateServing()...)
	if len(o.Args) > 0 {
		errs = append(errs, fmt.Errorf("unexpected argument %q: podcap-agent takes flags only; subcommands: version, policy eval", o.Args[0]))
	}
	return errors.Join(errs...)
}

// checkEngine accepts the name of a capture engine (--engine, also `policy eval`'s).
func checkEngine(name string) error {
	if name != capture.EngineTcpdump && name != capture.EngineNative {
		return fmt.Errorf("--engine %q must be %s or %s", name, capture.EngineTcpdump, capture.EngineNative)
	}
	return nil
}

// validateEngine checks --engine and the native engine's ring sizes.
func (o *Options) validateEngine() []error {
	var errs []error
	if o.NativeBufferBytes < native.MinRingBytes || o.NativeBufferBytes > native.MaxRingBytes {
		errs = append(errs, fmt.Errorf("--native-buffer-bytes %d must be from %d to %d", o.NativeBufferBytes, native.MinRingBytes, native.MaxRingBytes))
	} else if o.NativeBufferBudget < o.NativeBufferBytes {
		errs = append(errs, fmt.Errorf("--native-buffer-budget %d must be at least --native-buffer-bytes %d: no native capture could start", o.NativeBufferBudget, o.NativeBufferBytes))
	}
	return errs
}

// validateServing checks the listeners and the API's TLS options.
func (o *Options) validateServing() []error {
	var errs []error
	if o.ListenAddress == "" || o.APIListenAddress == "" {
		errs = append(errs, errors.New("--listen-address and --api-listen-address are required"))
	} else if o.ListenAddress == o.APIListenAddress && !strings.HasSuffix(o.ListenAddress, ":0") { // port 0: two free ports
		errs = append(errs, fmt.Errorf("--listen-address and --api-listen-address are both %s: the API needs its own port", o.ListenAddress))
	}
	for _, a := range []struct{ flag, addr string }{{"--listen-address", o.ListenAddress}, {"--api-listen-address", o.APIListenAddress}} {
		if a.addr == "" {
			continue // said above
		}
		if err := checkHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.flag, a.addr, err))
		}
	}
	if (o.TLSCertFile == "") != (o.TLSPrivateKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-private-key-file go together: set both (the mounted pair) or neither (a self-signed certificate)"))
	}
	if o.InsecureServeAPIOverHTTP && (o.TLSCertFile != "" || o.TLSPrivateKeyFile != "") {
		errs = append(errs, errors.New("--insecure-serve-api-over-http contradicts --tls-cert-file and --tls-private-key-file: drop one or the other"))
	}
	if o.InsecureServeAPIOverHTTP && o.WebhookClientCAFile != "" {
		errs = append(errs, errors.New("--webhook-client-ca-file needs TLS, and --insecure-serve-api-over-http turns it off: drop one or the other"))
	}
	if o.InsecureServeAPIOverHTTP && o.APIClientCAFile != "" {
		errs = append(errs, errors.New("--api-client-ca-file needs TLS, and --insecure-serve-api-over-http turns it off: drop one or the other"))
	}
	if o.APIClientCAFile != "" && o.APIClientCAFile == o.WebhookClientCAFile {
		errs = append(errs, errors.New("--api-client-ca-file and --webhook-client-ca-file are the same file: every user certificate would also post alerts, give Alertmanager its own CA"))
	}
	if o.WebhookTokenFile != "" && o.WebhookTokenFile == o.APITokenFile {
		errs = append(errs, errors.New("--webhook-token-file and --api-token-file are the same file: the webhook's token lets Alertmanager post alerts, give it its own"))
	}
	if o.NodeIP != "" && net.ParseIP(o.NodeIP) == nil {
		errs = append(errs, fmt.Errorf("--node-ip %q is not an IP address", o.NodeIP))
	}
	return errs
}

// checkHostPort accepts a listen address as net.Listen takes it: host:port, the host may be
// empty (every address) and the port is a number from 0 to 65535 (0: any free port).
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("must be host:port, e.g. :9695 or 127.0.0.1:9695")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q must be a number from 0 to 65535", port)
	}
	return nil
}
