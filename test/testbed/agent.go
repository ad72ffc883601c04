package testbed

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// AgentStopTimeout bounds how long Stop waits after SIGTERM before it sends SIGKILL.
const AgentStopTimeout = 30 * time.Second

// AgentVersion is the version BuildAgent builds the agent with (-ldflags -X, as the Makefile
// does), for tests to find in `podcap-agent version`, its start log and podcap_build_info.
const AgentVersion = "v0.0.0-testbed"

// agentLDFlags are the Makefile's -ldflags of the agent's build identity: AgentVersion, the
// repository's commit (git rev-parse HEAD, "unknown" without git), the time of the build.
func agentLDFlags(repo string) string {
	commit := "unknown"
	if out, err := exec.Command("git", "-C", repo, "rev-parse", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	const pkg = "github.com/podcap/podcap/agent/version."
	return "-X " + pkg + "Version=" + AgentVersion + " -X " + pkg + "Commit=" + commit +
		" -X " + pkg + "BuildDate=" + time.Now().UTC().Format(time.RFC3339)
}

// BuildAgent builds ./cmd/podcap-agent (CGO_ENABLED=0, version AgentVersion) once per test
// binary and returns the binary's path; every test that calls it fails with the build error if
// the build failed.
func (c *Cluster) BuildAgent(t testing.TB) string {
	t.Helper()
	b := &c.agentBuild
	b.once.Do(func() {
		b.path = filepath.Join(c.workDir, "podcap-agent")
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		cmd := exec.Command(goBin, "build", "-ldflags", agentLDFlags(c.RepoRoot), "-o", b.path, "./cmd/podcap-agent")
		cmd.Dir = c.RepoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/podcap-agent: %w\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// AgentProcess is the agent under test, running as a host process in its own session.
type AgentProcess struct {
	Args          []string // the full argument list
	CaptureDir    string   // its --capture-dir
	ListenAddress string   // its --listen-address (host:port): health and metrics, plain HTTP
	// APIListenAddress is its --api-listen-address (host:port): the API, HTTPS unless the
	// test passed --insecure-serve-api-over-http
	APIListenAddress string
	LogPath          string // its stdout and stderr; printed when the test fails

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // its exit status; valid once done is closed
}

// StartAgent builds the agent (BuildAgent) and starts it with --kubeconfig=AgentKubeconfig,
// --node-name=NodeName, --cri-endpoint=CRIEndpoint, --netns-dir=NetNSDir,
// --listen-address=127.0.0.1:<free port>, --api-listen-address=127.0.0.1:<free port> and
// --capture-dir=<a t.TempDir()>, each unless args set it, followed by args. The agent runs
// in a session of its own, recorded in RunDir/agent-sessions so that `cluster.sh down` kills
// whatever of it survives the test; the test's cleanup stops it and kills its session.
func (c *Cluster) StartAgent(t testing.TB, args ...string) *AgentProcess {
	t.Helper()
	bin := c.BuildAgent(t)
	a := &AgentProcess{done: make(chan struct{})}
	if a.CaptureDir = flagValue(args, "capture-dir"); a.CaptureDir == "" {
		a.CaptureDir = t.TempDir()
		args = append([]string{"--capture-dir=" + a.CaptureDir}, args...)
	}
	for _, l := range []struct {
		flag string
		addr *string
	}{{"listen-address", &a.ListenAddress}, {"api-listen-address", &a.APIListenAddress}} {
		if *l.addr = flagValue(args, l.flag); *l.addr == "" {
			port, err := freePort()
			if err != nil {
				t.Fatal(err)
			}
			*l.addr = "127.0.0.1:" + strconv.Itoa(port)
			args = append([]string{"--" + l.flag + "=" + *l.addr}, args...)
		}
	}
	for _, f := range []struct{ name, value string }{
		{"cri-endpoint", c.CRIEndpoint}, {"netns-dir", c.NetNSDir}, {"node-name", c.NodeName}, {"kubeconfig", c.AgentKubeconfig},
	} {
		if !hasFlag(args, f.name) {
			args = append([]string{"--" + f.name + "=" + f.value}, args...)
		}
	}
	a.Args = args

	c.mu.Lock()
	c.agentSeq++
	seq := c.agentSeq
	c.mu.Unlock()
	dir := filepath.Join(c.LogDir, "agents")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a.LogPath = filepath.Join(dir, fmt.Sprintf("%03d-%s.log", seq, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())))
	logf, err := os.Create(a.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()

	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	go func() {
		a.err = a.cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() { a.cleanup(t) })
	// the session id is the agent's pid (Setsid)
	if err := c.recordSession(a.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	t.Logf("agent pid %d: %s %s (log %s)", a.cmd.Process.Pid, bin, strings.Join(args, " "), a.LogPath)
	return a
}

func (c *Cluster) recordSession(sid int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(c.RunDir, "agent-sessions"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("record agent session: %w", err)
	}
	_, err = fmt.Fprintf(f, "%d\n", sid)
	return errors.Join(err, f.Close())
}

// PID is the agent's process id (and session id).
func (a *AgentProcess) PID() int { return a.cmd.Process.Pid }

// Done is closed when the agent has exited.
func (a *AgentProcess) Done() <-chan struct{} { return a.done }

// ExitErr is the agent's exit status (nil for exit 0); call it after Done is closed.
func (a *AgentProcess) ExitErr() error { return a.err }

// Stop sends SIGTERM, waits up to AgentStopTimeout (then SIGKILL) and returns the exit status:
// nil when the agent exited 0.
func (a *AgentProcess) Stop() error {
	select {
	case <-a.done:
		return a.err
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
		return a.err
	case <-time.After(AgentStopTimeout):
		_ = a.cmd.Process.Kill()
		<-a.done
		return fmt.Errorf("agent ignored SIGTERM for %s, killed: %w", AgentStopTimeout, a.err)
	}
}

// Kill sends SIGKILL to the agent alone, like a crash: its children (tcpdump) are left as they
// are. It waits until the agent is reaped.
func (a *AgentProcess) Kill() error {
	err := a.cmd.Process.Kill()
	<-a.done
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// SessionPIDs lists the live processes of the agent's session (the agent and its children).
func (a *AgentProcess) SessionPIDs() ([]int, error) { return sessionPIDs(a.cmd.Process.Pid) }

// URL is http://ListenAddress + path: health and metrics.
func (a *AgentProcess) URL(path string) string { return "http://" + a.ListenAddress + path }

// APIURL is https://APIListenAddress + path: the API.
func (a *AgentProcess) APIURL(path string) string { return "https://" + a.APIListenAddress + path }

// selfSignedLogged matches the agent's log line of its self-signed certificate.
var selfSignedLogged = regexp.MustCompile(`"Generated a self-signed TLS certificate".* sha256Fingerprint="([0-9A-F:]{95})"`)

// APIClient is an HTTPS client of the agent's API that trusts exactly the self-signed
// certificate the agent logged at start (PinnedAPIClient). Call it once the agent is ready.
func (a *AgentProcess) APIClient() (*http.Client, error) { return PinnedAPIClient(a.Log()) }

// PinnedAPIClient is an HTTPS client that trusts exactly the self-signed certificate whose
// SHA-256 fingerprint an agent's log holds, as a user pins it from `kubectl logs`.
func PinnedAPIClient(agentLog string) (*http.Client, error) {
	m := selfSignedLogged.FindStringSubmatch(agentLog)
	if m == nil {
		return nil, errors.New("the agent logged no self-signed certificate")
	}
	pinned := m[1]
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// the certificate is verified below, by its fingerprint, instead of by a CA
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if got := strings.ToUpper(hex.EncodeToString(sum[:])); got != strings.ReplaceAll(pinned, ":", "") {
				return fmt.Errorf("server certificate %s, want the logged %s", got, pinned)
			}
			return nil
		},
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}, nil
}

// MetricsURL is the agent's /metrics.
func (a *AgentProcess) MetricsURL() string { return a.URL("/metrics") }

// WaitReady polls /readyz until it answers 200; it fails early if the agent exits.
func (a *AgentProcess) WaitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		select {
		case <-a.done:
			return false, fmt.Errorf("agent exited: %v", a.err)
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL("/readyz"), nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusOK, nil
	}, "agent %s ready", a.URL("/readyz"))
	if err != nil && last != "" {
		return fmt.Errorf("%w (last: %s)", err, last)
	}
	return err
}

// Log returns what the agent has written so far.
func (a *AgentProcess) Log() string {
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", a.LogPath, err)
	}
	return string(b)
}

// cleanup stops the agent, kills whatever remains of its session, and prints its log if the
// test failed.
func (a *AgentProcess) cleanup(t testing.TB) {
	if err := a.Stop(); err != nil {
		t.Logf("agent %d: %v", a.PID(), err)
	}
	pids, err := sessionPIDs(a.cmd.Process.Pid)
	if err != nil {
		t.Errorf("agent %d session: %v", a.PID(), err)
	}
	for _, pid := range pids {
		t.Logf("agent %d: killing leftover session process %d (%s)", a.PID(), pid, cmdline(pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if t.Failed() {
		log := a.Log()
		const max = 64 << 10
		if len(log) > max {
			log = "...\n" + log[len(log)-max:]
		}
		t.Logf("agent %d log (%s):\n%s", a.PID(), a.LogPath, log)
	}
}

// sessionPIDs lists the live (non-zombie) processes whose session id is sid.
func sessionPIDs(sid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid pgrp session ...; comm may contain spaces and parentheses
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 4 || f[0] == "Z" {
			continue
		}
		if s, err := strconv.Atoi(f[3]); err == nil && s == sid {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// flagValue returns the value of flag name in args (-name=v, --name=v, -name v, --name v).
func flagValue(args []string, name string) string {
	for i, a := range args {
		for _, p := range []string{"--" + name, "-" + name} {
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v
			}
			if a == p && i+1 < len(args) {
				return args[i+1]
			}
		}
	}
	return ""
}

// hasFlag reports whether args set flag name in any of flagValue's forms.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--"+name || a == "-"+name || strings.HasPrefix(a, "--"+name+"=") || strings.HasPrefix(a, "-"+name+"=") {
			return true
		}
	}
	return false
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
