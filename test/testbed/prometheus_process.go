package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// DaemonStopTimeout bounds how long a Prometheus or Alertmanager's Stop waits after SIGTERM
// before it sends SIGKILL.
const DaemonStopTimeout = 15 * time.Second

// daemon is a Prometheus or an Alertmanager a test started: a host process on
// 127.0.0.1:<free port> in a session of its own, recorded like the agents' sessions so that
// `cluster.sh down` (and the guard, when the test binary dies) kills it; its files (config,
// storage) in a scratch dir under the cluster's work dir, which down removes too.
type daemon struct {
	name    string // "prometheus", "alertmanager": messages, file names
	dir     string // scratch dir: config, storage; removed by cleanup
	addr    string // 127.0.0.1:port, its --web.listen-address
	logPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // its exit status; valid once done is closed
}

// newDaemon makes the scratch dir and picks the listen address.
func (c *Cluster) newDaemon(t testing.TB, name string) *daemon {
	t.Helper()
	if c.workDir == "" {
		t.Fatalf("%s: the cluster has no work dir (not started)", name)
	}
	d := &daemon{name: name, done: make(chan struct{})}
	var err error
	if d.dir, err = os.MkdirTemp(c.workDir, name+"-"); err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	d.addr = "127.0.0.1:" + strconv.Itoa(port)
	return d
}

// startDaemon runs bin with args in its own session, its output to a log file under LogDir, and
// registers its cleanup.
func (c *Cluster) startDaemon(t testing.TB, d *daemon, bin string, args []string) {
	t.Helper()
	logDir := filepath.Join(c.LogDir, d.name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.CreateTemp(logDir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.logPath = logf.Name()
	d.cmd = exec.Command(bin, args...)
	d.cmd.Dir = d.dir
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", d.name, err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() { d.cleanup(t) })
	// the session id is its pid (Setsid)
	if err := c.recordSession(d.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s pid %d: %s %s (log %s)", d.name, d.cmd.Process.Pid, bin, strings.Join(args, " "), d.logPath)
}

// url is http://addr + path.
func (d *daemon) url(path string) string { return "http://" + d.addr + path }

// waitReady polls /-/ready until it answers 200; it fails early if the process exits.
func (d *daemon) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		select {
		case <-d.done:
			return false, fmt.Errorf("%s exited: %v", d.name, d.err)
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url("/-/ready"), nil)
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
	}, "%s %s ready", d.name, d.url("/-/ready"))
	if err != nil && last != "" {
		err = fmt.Errorf("%w (last: %s)", err, last)
	}
	if err != nil {
		return fmt.Errorf("%w\n%s log:\n%s", err, d.name, tail(d.log(), 8<<10))
	}
	return nil
}

// stop sends SIGTERM, waits up to DaemonStopTimeout (then SIGKILL) and returns the exit
// status: nil when it exited 0.
func (d *daemon) stop() error {
	select {
	case <-d.done:
		return d.err
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return d.err
	case <-time.After(DaemonStopTimeout):
		_ = d.cmd.Process.Kill()
		<-d.done
		return fmt.Errorf("%s ignored SIGTERM for %s, killed: %w", d.name, DaemonStopTimeout, d.err)
	}
}

// cleanup stops the process, kills whatever remains of its session, prints its log if the
// test failed and removes its scratch dir.
func (d *daemon) cleanup(t testing.TB) {
	if err := d.stop(); err != nil {
		t.Logf("%s %d: %v", d.name, d.cmd.Process.Pid, err)
	}
	pids, err := sessionPIDs(d.cmd.Process.Pid)
	if err != nil {
		t.Errorf("%s %d session: %v", d.name, d.cmd.Process.Pid, err)
	}
	for _, pid := range pids {
		t.Logf("%s %d: killing leftover session process %d (%s)", d.name, d.cmd.Process.Pid, pid, cmdline(pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if t.Failed() {
		t.Logf("%s %d log (%s):\n%s", d.name, d.cmd.Process.Pid, d.logPath, tail(d.log(), 64<<10))
	}
	if err := os.RemoveAll(d.dir); err != nil {
		t.Errorf("%s: %v", d.name, err)
	}
}

func (d *daemon) log() string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", d.logPath, err)
	}
	return string(b)
}

func tail(s string, max int) string {
	if len(s) > max {
		return "...\n" + s[len(s)-max:]
	}
	return s
}

// checkConfig runs a config checker (promtool check config, amtool check-config) and turns
// its complaint into a clear error.
func checkConfig(ctx context.Context, file string, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		cfg, _ := os.ReadFile(file)
		return fmt.Errorf("%s: %w\n%s\nconfig %s:\n%s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)), file, cfg)
	}
	return nil
}

// writeFile writes a config file atomically (temp + rename): a reload never reads half of it.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ScrapeMetric reads url (Prometheus text format) and returns the sum of the samples of the
// counter, gauge or untyped metric name whose labels include labels (nil: every series). It
// fails if no series matches, so that a misspelt name or label does not read as 0.
func ScrapeMetric(ctx context.Context, url, name string, labels map[string]string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return 0, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	fam, ok := fams[name]
	if !ok {
		return 0, fmt.Errorf("%s: no metric %s", url, name)
	}
	var sum float64
	found := false
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		if !containsLabels(have, labels) {
			continue
		}
		v, ok := sampleValue(fam.GetType(), m)
		if !ok {
			return 0, fmt.Errorf("%s: %s is a %s, not a counter or gauge", url, name, fam.GetType())
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("%s: no series of %s with labels %v", url, name, labels)
	}
	return sum, nil
}

func containsLabels(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func sampleValue(typ dto.MetricType, m *dto.Metric) (float64, bool) {
	switch typ {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue(), true
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue(), true
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

// lookBinary returns path if it exists, else an error naming the Debian package that provides it.
func lookBinary(path, pkg string) (string, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s not found: install Debian's %s (test/cluster/cluster.sh build does)", path, pkg)
		}
		return "", err
	}
	return path, nil
}
