// Package testbed gives podcap's integration tests a real single-node Kubernetes cluster on
// this machine (test/cluster/cluster.sh: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, containerd through its CRI socket, kubelet) and runs the agent under test as
// a host process against it.
//
// One Cluster serves a whole test package: TestMain calls Start and, when the tests are done,
// Stop. A guard process tears the cluster down if the test binary dies first (panic, timeout,
// SIGKILL). Helpers never sleep to synchronise: they poll with deadlines.
package testbed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is a running test bed instance. Its fields are read-only.
type Cluster struct {
	Instance        string       // PODCAP_CLUSTER, "test" unless set
	RepoRoot        string       // the podcap module's root directory
	AdminKubeconfig string       // system:masters
	AgentKubeconfig string       // AgentUser: only ClusterRole podcap-agent (deploy/rbac.yaml)
	AgentUser       string       // the agent kubeconfig's user name
	APIServer       string       // https://127.0.0.1:PORT
	CRIEndpoint     string       // unix://.../containerd.sock
	NetNSDir        string       // where containerd pins pods' network namespaces (a shared mount)
	NodeName        string       // the only node
	Subnet          netip.Prefix // pod IPs (CNI bridge, no route out)
	Gateway         netip.Addr   // the bridge's address on the host: pods' traffic goes here
	SinkPort        int          // TCP sink on Gateway (`traffic push` sends to it)
	BinDir          string       // kubectl, crictl, kubelet, ... of the cluster
	ClusterDir      string       // the instance's state dir
	RunDir          string       // kubeconfigs, PKI, pid files, agent-sessions
	LogDir          string       // component logs; agents' logs under agents/
	CaptureDirRoot  string       // suggested root for agents' --capture-dir (removed by down)
	WorkloadImage   string       // busybox + /usr/local/bin/traffic
	AgentImage      string       // tag ImportAgentImage imports

	script  string // test/cluster/cluster.sh
	workDir string // this process's scratch dir (agent binary) under ClusterDir, removed by Stop and down
	admin   kubernetes.Interface
	agent   kubernetes.Interface

	guard   *exec.Cmd
	guardIn *os.File // write end of the guard's stdin; "release" then close

	agentBuild struct {
		once sync.Once
		path string
		err  error
	}

	// mu protects the fields below.
	mu       sync.Mutex
	agentSeq int
	stopped  bool
}

// Start brings the test bed instance up and returns it. A previous run that died before its
// teardown is cleaned up first (`cluster.sh down`). If `up` fails, everything is torn down
// again before Start returns the error.
func Start(ctx context.Context) (*Cluster, error) {
	repo, err := repoRoot()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Instance: os.Getenv("PODCAP_CLUSTER"),
		RepoRoot: repo,
		script:   filepath.Join(repo, "test", "cluster", "cluster.sh"),
	}
	if c.Instance == "" {
		c.Instance = "test"
	}
	// the env is pure computation: fill the fields before anything runs
	out, err := c.sh(ctx, "env")
	if err != nil {
		return nil, err
	}
	if err := c.fill(parseEnv(out)); err != nil {
		return nil, fmt.Errorf("cluster.sh env: %w", err)
	}
	if _, err := c.sh(ctx, "down"); err != nil {
		return nil, fmt.Errorf("clean up what a previous run left: %w", err)
	}
	if err := c.startGuard(); err != nil {
		return nil, err
	}
	if _, err := c.sh(ctx, "up"); err != nil {
		// a fresh context: ctx may be what ended the up
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		if derr := c.Stop(dctx); derr != nil {
			return nil, fmt.Errorf("cluster up: %w (and down: %v)", err, derr)
		}
		return nil, fmt.Errorf("cluster up: %w", err)
	}
	if err := c.connect(); err != nil {
		return nil, errors.Join(err, c.Stop(context.WithoutCancel(ctx)))
	}
	// under the state dir, so that the guard's `down` removes it too
	scratch := filepath.Join(c.ClusterDir, "testbed")
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return nil, errors.Join(err, c.Stop(context.WithoutCancel(ctx)))
	}
	if c.workDir, err = os.MkdirTemp(scratch, "run-"); err != nil {
		return nil, errors.Join(err, c.Stop(context.WithoutCancel(ctx)))
	}
	return c, nil
}

// Stop tears the cluster down (`cluster.sh down`: also every agent session recorded by
// StartAgent) and reports anything left behind on the host as an error. Safe to call twice.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	c.mu.Unlock()
	_, err := c.sh(ctx, "down")
	err = errors.Join(err, c.releaseGuard())
	if c.workDir != "" {
		err = errors.Join(err, os.RemoveAll(c.workDir))
	}
	return err
}

// Admin is a clientset with the admin's (system:masters) rights.
func (c *Cluster) Admin() kubernetes.Interface { return c.admin }

// AgentClient is a clientset with exactly the agent's rights (ClusterRole podcap-agent).
func (c *Cluster) AgentClient() kubernetes.Interface { return c.agent }

// ImportAgentImage builds image AgentImage from the static agent binary and imports it into
// the cluster's containerd (`cluster.sh agent-image`).
func (c *Cluster) ImportAgentImage(ctx context.Context, binary string) error {
	_, err := c.sh(ctx, "agent-image", binary)
	return err
}

// ApplyAgentRBAC re-applies what the agent user's rights come from (deploy/rbac.yaml's
// ClusterRole podcap-agent and the user's binding to it) and checks them again with
// `kubectl auth can-i`: for a test that deleted deploy/'s objects (`kubectl delete -k`).
func (c *Cluster) ApplyAgentRBAC(ctx context.Context) error {
	_, err := c.sh(ctx, "agent-rbac")
	return err
}

func (c *Cluster) connect() error {
	var err error
	if c.admin, err = clientset(c.AdminKubeconfig); err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	if c.agent, err = clientset(c.AgentKubeconfig); err != nil {
		return fmt.Errorf("agent client: %w", err)
	}
	return nil
}

func clientset(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	return kubernetes.NewForConfig(cfg)
}

// sh runs cluster.sh with args and returns its stdout; its log (stderr) goes to this
// process's stderr, which `go test` shows when the package fails or with -v.
func (c *Cluster) sh(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{c.script}, args...)...)
	cmd.Env = append(os.Environ(), "PODCAP_CLUSTER="+c.Instance)
	// its own process group, so that cancelling reaches the locked inner run and the
	// components it started (down cleans up after them)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("cluster.sh %s: %w", strings.Join(args, " "), err)
	}
	return stdout.String(), nil
}

// startGuard starts `cluster.sh guard` in its own session with the read end of a pipe as its
// stdin. The write end stays open in this process only (Go opens it close-on-exec), so the
// guard sees EOF exactly when this process dies, and then tears the cluster down.
func (c *Cluster) startGuard() error {
	if err := os.MkdirAll(c.LogDir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(c.LogDir, "guard.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command("bash", c.script, "guard")
	cmd.Env = append(os.Environ(), "PODCAP_CLUSTER="+c.Instance)
	cmd.Stdin = r
	// not this process's stdout/stderr: `go test` waits for every holder of those to exit
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start guard: %w", err)
	}
	c.guard, c.guardIn = cmd, w
	return nil
}

func (c *Cluster) releaseGuard() error {
	if c.guard == nil {
		return nil
	}
	_, werr := io.WriteString(c.guardIn, "release\n")
	cerr := c.guardIn.Close()
	done := make(chan error, 1)
	go func() { done <- c.guard.Wait() }()
	select {
	case err := <-done:
		return errors.Join(werr, cerr, err)
	case <-time.After(10 * time.Second):
		_ = c.guard.Process.Kill()
		return errors.Join(werr, cerr, errors.New("guard did not exit after release"), <-done)
	}
}

// parseEnv reads `export NAME=VALUE` lines (cluster.sh env; values are plain or
// backslash-escaped, as bash's printf %q writes simple strings) and ignores every other line.
func parseEnv(out string) map[string]string {
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "export ")
		if !ok {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(v, `"'$`) {
			continue
		}
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			if v[i] == '\\' && i+1 < len(v) {
				i++
			}
			b.WriteByte(v[i])
		}
		env[k] = b.String()
	}
	return env
}

func (c *Cluster) fill(env map[string]string) error {
	var missing []string
	get := func(k string) string {
		v, ok := env[k]
		if !ok || v == "" {
			missing = append(missing, k)
		}
		return v
	}
	c.AdminKubeconfig = get("PODCAP_ADMIN_KUBECONFIG")
	c.AgentKubeconfig = get("PODCAP_AGENT_KUBECONFIG")
	c.AgentUser = get("PODCAP_AGENT_USER")
	c.APIServer = get("PODCAP_API_SERVER")
	c.CRIEndpoint = get("PODCAP_CRI_ENDPOINT")
	c.NetNSDir = get("PODCAP_NETNS_DIR")
	c.NodeName = get("PODCAP_NODE_NAME")
	c.BinDir = get("PODCAP_BIN")
	c.ClusterDir = get("PODCAP_CLUSTER_DIR")
	c.RunDir = get("PODCAP_RUN_DIR")
	c.LogDir = get("PODCAP_LOG_DIR")
	c.CaptureDirRoot = get("PODCAP_CAPTURE_DIR")
	c.WorkloadImage = get("PODCAP_WORKLOAD_IMAGE")
	c.AgentImage = get("PODCAP_AGENT_IMAGE")
	subnet, gw, port := get("PODCAP_SUBNET"), get("PODCAP_GATEWAY"), get("PODCAP_SINK_PORT")
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	var err error
	if c.Subnet, err = netip.ParsePrefix(subnet); err != nil {
		return err
	}
	if c.Gateway, err = netip.ParseAddr(gw); err != nil {
		return err
	}
	if c.SinkPort, err = strconv.Atoi(port); err != nil {
		return fmt.Errorf("sink port: %w", err)
	}
	return nil
}

// repoRoot finds the podcap module root: PODCAP_REPO, else the nearest directory above the
// working directory (a test's package dir) with the project's go.mod.
func repoRoot() (string, error) {
	if r := os.Getenv("PODCAP_REPO"); r != "" {
		return r, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(mod, []byte("module github.com/podcap/podcap\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("podcap repository not found above the working directory (set PODCAP_REPO)")
		}
		dir = parent
	}
}
