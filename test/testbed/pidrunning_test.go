package testbed

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pidRunningScripts are the scripts that define the shell function pid_running PID (exists
// and is neither a zombie nor dead), relative to the repository, with their environment.
// test/cluster/common.sh and test/bench/lib.sh source the one definition.
var pidRunningScripts = map[string][]string{
	"test/cluster/proc.sh": nil,
}

// TestPidRunning runs pid_running against real processes. cluster.sh's stop_pid
// and demo-alert.sh trust it to tell a process that ignored SIGTERM from one that is gone.
func TestPidRunning(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("pid_running reads /proc")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	// comm, what /proc/PID/stat shows in parentheses, is the executable's name: it may hold
	// spaces and parentheses (up to 15 bytes)
	for name, target := range map[string]string{"x) Z y": "sleep", "x) S y": "true"} {
		p, err := exec.LookPath(target)
		if err != nil {
			t.Skip(err)
		}
		if err := os.Symlink(p, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	for script, env := range pidRunningScripts {
		t.Run(filepath.Base(script), func(t *testing.T) {
			script := filepath.Join(root, script)
			for _, tc := range []struct {
				name    string
				pid     func(t *testing.T) string
				running bool
			}{
				{"sleeping", func(t *testing.T) string { return startProc(t, "sleep", "60") }, true},
				{"stopped", func(t *testing.T) string {
					pid := startProc(t, "sleep", "60")
					n, _ := strconv.Atoi(pid)
					if err := syscall.Kill(n, syscall.SIGSTOP); err != nil {
						t.Fatal(err)
					}
					waitState(t, pid, "T")
					return pid
				}, true},
				{"zombie", func(t *testing.T) string { return zombie(t, "true") }, false},
				{"gone", func(t *testing.T) string {
					cmd := exec.Command("true")
					if err := cmd.Run(); err != nil {
						t.Fatal(err)
					}
					return strconv.Itoa(cmd.Process.Pid)
				}, false},
				{"running, name with ') Z '", func(t *testing.T) string {
					return startProc(t, filepath.Join(bin, "x) Z y"), "60")
				}, true},
				{"zombie, name with ') S '", func(t *testing.T) string { return zombie(t, filepath.Join(bin, "x) S y")) }, false},
				{"empty", func(*testing.T) string { return "" }, false},
				{"self", func(*testing.T) string { return "self" }, false},
				{"not a number", func(*testing.T) string { return "1x" }, false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					pid := tc.pid(t)
					if got := pidRunning(t, script, env, pid, nil); got != tc.running {
						t.Errorf("pid_running %q (state %q) = %v, want %v", pid, procState(pid), got, tc.running)
					}
				})
			}
			// The process is reaped after pid_running looked at it and before it read its
			// state (what a just-reaped child does to a check-then-read): it must not read
			// as running. Any program pid_running starts first reaps the zombie, then runs.
			t.Run("reaped while it is read", func(t *testing.T) {
				cmd := exec.Command("true")
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				pid := strconv.Itoa(cmd.Process.Pid)
				waitState(t, pid, "Z")
				reaped := false
				if pidRunning(t, script, env, pid, func() { _ = cmd.Wait(); reaped = true }) {
					t.Errorf("pid_running %s = true for a zombie reaped while it was read (reaped during the call: %v)", pid, reaped)
				}
				if !reaped {
					_ = cmd.Wait()
				}
			})
		})
	}
}

// pidRunning runs the script's pid_running PID in bash. With reap, every program the
// function runs first waits until reap has been called.
func pidRunning(t *testing.T, script string, env []string, pid string, reap func()) bool {
	t.Helper()
	dir := t.TempDir()
	shims, hook, done := filepath.Join(dir, "bin"), filepath.Join(dir, "reap"), filepath.Join(dir, "reaped")
	prog := `. "$1"; pid_running "$2"`
	if reap != nil {
		if err := os.Mkdir(shims, 0o755); err != nil {
			t.Fatal(err)
		}
		shim := "#!/bin/sh\n: >'" + hook + "'\nwhile [ ! -e '" + done + "' ]; do sleep 0.01; done\n" +
			"PATH=$ORIG_PATH exec \"${0##*/}\" \"$@\"\n"
		for _, name := range []string{"awk", "cat", "cut", "grep", "head", "sed", "tr", "ps"} {
			if err := os.WriteFile(filepath.Join(shims, name), []byte(shim), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		prog = `. "$1"; ORIG_PATH=$PATH; export ORIG_PATH; PATH=` + shims + `:$PATH; pid_running "$2"`
	}
	cmd := exec.Command("bash", "-c", prog, "bash", script, pid)
	cmd.Env = append(os.Environ(), env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- cmd.Wait() }()
	var err error
	for waiting := reap != nil; ; {
		if waiting {
			if _, serr := os.Stat(hook); serr == nil {
				reap()
				if werr := os.WriteFile(done, nil, 0o644); werr != nil {
					t.Fatal(werr)
				}
				waiting = false
			}
		}
		select {
		case err = <-ended:
		case <-time.After(5 * time.Millisecond):
			continue
		}
		break
	}
	if out.Len() > 0 {
		t.Logf("pid_running %q: %s", pid, out.String())
	}
	var exit *exec.ExitError
	if err != nil && (!errors.As(err, &exit) || exit.ExitCode() != 1) {
		t.Fatalf("pid_running %q: %v", pid, err)
	}
	return err == nil
}

// startProc starts a process that the test kills and reaps at its end.
func startProc(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return strconv.Itoa(cmd.Process.Pid)
}

// zombie starts a process that exits at once and is reaped only at the end of the test.
func zombie(t *testing.T, name string) string {
	t.Helper()
	cmd := exec.Command(name)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Wait() })
	pid := strconv.Itoa(cmd.Process.Pid)
	waitState(t, pid, "Z")
	return pid
}

// procState is the state letter of /proc/PID/stat, after the parenthesised comm.
func procState(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	_, after, _ := strings.Cut(s[strings.LastIndexByte(s, ')')+1:], " ")
	state, _, _ := strings.Cut(after, " ")
	return state
}

func waitState(t *testing.T, pid, state string) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); procState(pid) != state; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("pid %s: state %q, want %q", pid, procState(pid), state)
		}
	}
}
