package main

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildAgent builds the real agent into a temporary directory with ldflags and returns its
// path; it skips the test without a go tool.
func buildAgent(t *testing.T, ldflags string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		// the official tarball's place, as test/testbed's BuildAgent looks
		if goBin, err = exec.LookPath("/usr/local/go/bin/go"); err != nil {
			t.Skip("no go tool to build the agent with")
		}
	}
	bin := filepath.Join(t.TempDir(), "podcap-agent")
	build := exec.CommandContext(t.Context(), goBin, "build", "-ldflags", ldflags, "-o", bin, ".")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestStartupFlagErrorsBinary runs the real agent with invalid flags: it exits 2 at once,
// before anything starts, with one line that names the flag.
func TestStartupFlagErrorsBinary(t *testing.T) {
	bin := buildAgent(t, "")
	for _, tc := range []struct {
		args []string
		want string // the whole of stderr
	}{
		{[]string{"--node-name=n1", "--listen-address", "garbage"},
			`podcap-agent: --listen-address "garbage": must be host:port, e.g. :9695 or 127.0.0.1:9695` + "\n"},
		{[]string{"--node-name=n1", "--api-listen-address=:https"},
			`podcap-agent: --api-listen-address ":https": port "https" must be a number from 0 to 65535` + "\n"},
		{[]string{"--node-name=n1", "--logging-format=xml"},
			`podcap-agent: --logging-format, -v, --vmodule: format: Invalid value: "xml": Unsupported log format` + "\n"},
		{[]string{"--node-name=n1", "run"},
			`podcap-agent: unexpected argument "run": podcap-agent takes flags only; subcommands: version, policy eval` + "\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(t.Context(), bin, tc.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.Env = []string{}
			start := time.Now()
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 || stdout.Len() > 0 || stderr.String() != tc.want {
				t.Fatalf("podcap-agent %q: %v, stdout %q, stderr %q; want exit 2 and stderr %q", tc.args, err, stdout.String(), stderr.String(), tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s: the flags are checked before anything starts", d)
			}
		})
	}
}

// TestStartupUnreachableBinary starts the real agent against an API server that refuses
// connections (a kubeconfig of a closed local port) and a CRI socket that does not exist: it
// keeps running and says so at the default verbosity, naming the server, the socket and the
// flags to check; in text and in JSON logs.
func TestStartupUnreachableBinary(t *testing.T) {
	for _, tool := range []string{"nsenter", "tcpdump"} { // --engine tcpdump must build
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s on PATH: the agent would not start", tool)
		}
	}
	bin := buildAgent(t, "")
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) { testStartupUnreachable(t, bin, format) })
	}
}

func testStartupUnreachable(t *testing.T, bin, format string) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := "https://" + l.Addr().String()
	_ = l.Close() // now closed: connections are refused
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "`+server+`", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: not-a-real-token}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "no-such-containerd.sock")
	cmd := exec.CommandContext(t.Context(), bin, "--node-name=x", "--kubeconfig="+kubeconfig, "--cri-endpoint="+socket,
		"--capture-dir="+filepath.Join(dir, "captures"), "--listen-address=127.0.0.1:0", "--api-listen-address=127.0.0.1:0",
		"--alert-namespace=", "--logging-format="+format)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // nsenter and tcpdump are looked up on it
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	want := map[string][]string{ // a message → what its line must also hold
		"Waiting for the Kubernetes API server": {server, "--kubeconfig " + kubeconfig, "connection refused"},
		"Container runtime not answering":       {socket, "--cri-endpoint", "no such file or directory"},
	}
	var seen []string
	deadline := time.After(60 * time.Second) // the API server's first report is due after 5 s
	for len(want) > 0 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the agent ended; stderr:\n%s", strings.Join(seen, "\n"))
			}
			seen = append(seen, line)
			for msg, parts := range want {
				if !strings.Contains(line, msg) {
					continue
				}
				if isErr := strings.HasPrefix(line, "E") || (format == "json" && strings.HasPrefix(line, "{") && strings.Contains(line, `"err":`)); !isErr {
					t.Errorf("not a %s error entry: %s", format, line)
				}
				for _, p := range parts {
					if !strings.Contains(line, p) {
						t.Errorf("%q without %q: %s", msg, p, line)
					}
				}
				delete(want, msg)
			}
		case <-deadline:
			t.Fatalf("no %v in 60 s; stderr:\n%s", want, strings.Join(seen, "\n"))
		}
	}
}
