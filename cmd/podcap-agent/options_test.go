package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func parseOptions(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	return parseOptionsEnv(t, "", "", args...)
}

// parseOptionsEnv parses args with the environment variables NODE_NAME and NODE_IP set to
// nodeName and nodeIP.
func parseOptionsEnv(t *testing.T, nodeName, nodeIP string, args ...string) (*Options, error) {
	t.Helper()
	t.Setenv("NODE_NAME", nodeName)
	t.Setenv("NODE_IP", nodeIP)
	o := &Options{}
	fs := flag.NewFlagSet("podcap-agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.Args = fs.Args()
	return o, o.Validate()
}

func TestOptionsDefaultsAreValid(t *testing.T) {
	if _, err := parseOptions(t, "--node-name=n1"); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

// By default the API has its own port, next to the plain one of health and metrics, and
// serves TLS (no opt-out).
func TestOptionsDefaultsServeTheAPIOverTLS(t *testing.T) {
	o, err := parseOptionsEnv(t, "n1", "10.0.0.7")
	if err != nil || o.NodeName != "n1" || o.ListenAddress != ":9695" || o.APIListenAddress != ":9696" || o.InsecureServeAPIOverHTTP || o.NodeIP != "10.0.0.7" {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
}

func TestOptionsServingIsValid(t *testing.T) {
	for _, args := range [][]string{
		{"--tls-cert-file=/etc/tls/tls.crt", "--tls-private-key-file=/etc/tls/tls.key"},
		{"--insecure-serve-api-over-http"},
		{"--node-ip=fd00::7", "--api-listen-address=127.0.0.1:9443"},
		{"--listen-address=[::1]:0", "--api-listen-address=localhost:65535"},
	} {
		if _, err := parseOptions(t, append([]string{"--node-name=n1"}, args...)...); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		{nil, "--node-name"},
		{[]string{"--capture-dir=captures"}, "--capture-dir"},
		{[]string{"--max-files=0"}, "--max-files 0"},
		{[]string{"--max-files=1025"}, "--max-files 1025"},
		{[]string{"--max-concurrent-captures=0"}, "--max-concurrent-captures"},
		{[]string{"--policy-dir=rules"}, "--policy-dir"},
		{[]string{"--policy-poll-interval=0s"}, "must be positive"},
		{[]string{"--retention-max-age=-1h"}, "must be positive"},
		{[]string{"--retention-interval=0s"}, "--retention-interval must be positive"},
		{[]string{"--policy-eval-timeout=0s"}, "--policy-eval-timeout 0s must be positive"},
		{[]string{"--policy-eval-timeout=1m"}, "--policy-eval-timeout 1m0s must be positive and at most 10s"},
		{[]string{"--max-file-size-bytes=1000"}, "--max-file-size-bytes"},
		{[]string{"--retention-max-bytes=0"}, "--retention-max-bytes must be positive"},
		{[]string{"--listen-address="}, "--listen-address"},
		{[]string{"--api-listen-address="}, "--api-listen-address are required"},
		{[]string{"--api-listen-address=:9695"}, "the API needs its own port"},
		{[]string{"--tls-cert-file=/etc/tls/tls.crt"}, "--tls-cert-file and --tls-private-key-file go together"},
		{[]string{"--tls-private-key-file=/etc/tls/tls.key"}, "--tls-cert-file and --tls-private-key-file go together"},
		{[]string{"--insecure-serve-api-over-http", "--tls-cert-file=/a", "--tls-private-key-file=/b"}, "--insecure-serve-api-over-http contradicts"},
		{[]string{"--node-ip=node-1"}, `--node-ip "node-1" is not an IP address`},
		{[]string{"--listen-address=garbage"}, `--listen-address "garbage": must be host:port`},
		{[]string{"--listen-address=:http"}, `--listen-address ":http": port "http" must be a number from 0 to 65535`},
		{[]string{"--listen-address=:65536"}, `--listen-address ":65536": port "65536" must be a number`},
		{[]string{"--api-listen-address=127.0.0.1"}, `--api-listen-address "127.0.0.1": must be host:port`},
		{[]string{"--api-listen-address=[::1]:-1"}, `--api-listen-address "[::1]:-1": port "-1"`},
		{[]string{"run"}, `unexpected argument "run": podcap-agent takes flags only; subcommands: version, policy eval`},
		{[]string{"--capture-dir", "/tmp/c", "extra", "more"}, `unexpected argument "extra"`},
	} {
		args := tc.args
		if tc.want != "--node-name" {
			args = append([]string{"--node-name=n1"}, args...)
		}
		_, err := parseOptions(t, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one that mentions %q", tc.args, err, tc.want)
		}
	}
}

// Every problem is reported at once, not one per run.
func TestOptionsValidateReportsAll(t *testing.T) {
	_, err := parseOptions(t, "--capture-dir=rel", "--max-files=0", "--listen-address=")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"--node-name", "--capture-dir", "--max-files", "--listen-address"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
