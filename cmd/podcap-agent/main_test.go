package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/podcap/podcap/agent"
	"github.com/podcap/podcap/agent/metrics"
)

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, path, token, off string // off: part of why the API is off
	}{
		{"no flag", "", "", "no --api-token-file"},
		{"missing file", filepath.Join(dir, "missing"), "", "does not exist"},
		{"empty file", write("empty", "\n"), "", "0 bytes, shorter than the minimum of 16"},
		{"short token", write("short", "s3cret\n"), "", "6 bytes, shorter than the minimum of 16"},
		{"15 bytes", write("fifteen", "0123456789abcde"), "", "15 bytes"},
		{"16 bytes, trimmed", write("ok", "  0123456789abcdef\n"), "0123456789abcdef", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token, off, err := readToken(tc.path)
			if err != nil || token != tc.token || (tc.off == "") != (off == "") || !strings.Contains(off, tc.off) {
				t.Fatalf("readToken = %q, %q, %v; want %q and a reason with %q", token, off, err, tc.token, tc.off)
			}
		})
	}
	if _, _, err := readToken(dir); err == nil {
		t.Fatal("a directory read as a token file")
	}
}

// The API's transport: plain HTTP only on the explicit opt-out, which is logged as an error
// entry; the mounted pair when given (a bad one fails the start); else a self-signed
// certificate for the node's name and IP and localhost.
func TestAPITransport(t *testing.T) {
	newLogger := func(t *testing.T) (klog.Logger, func() ktesting.Log) {
		logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
		return logger, logger.GetSink().(ktesting.Underlier).GetBuffer().Data
	}
	t.Run("opt-out", func(t *testing.T) {
		logger, logged := newLogger(t)
		tr, mode, err := apiTransport(logger, &Options{InsecureServeAPIOverHTTP: true, APIListenAddress: ":9696"})
		if err != nil || !tr.InsecureHTTP || tr.GetCertificate != nil || mode != metrics.APITLSOff {
			t.Fatalf("%+v %q %v", tr, mode, err)
		}
		entries := logged()
		if len(entries) != 1 || entries[0].Type != ktesting.LogError || !strings.HasPrefix(entries[0].Message, "INSECURE: ") {
			t.Fatalf("log %+v, want one error entry that starts with INSECURE", entries)
		}
	})
	t.Run("mounted pair that does not load", func(t *testing.T) {
		logger, _ := newLogger(t)
		missing := filepath.Join(t.TempDir(), "missing")
		if _, _, err := apiTransport(logger, &Options{TLSCertFile: missing, TLSPrivateKeyFile: missing}); err == nil ||
			!strings.Contains(err.Error(), "--tls-cert-file") {
			t.Fatalf("error %v, want one naming the flags", err)
		}
	})
	t.Run("self-signed", func(t *testing.T) {
		logger, logged := newLogger(t)
		tr, mode, err := apiTransport(logger, &Options{NodeName: "node-1", NodeIP: "10.0.0.7"})
		if err != nil || tr.InsecureHTTP || tr.GetCertificate == nil || mode != metrics.APITLSSelfSigned {
			t.Fatalf("%+v %q %v", tr, mode, err)
		}
		cert, err := tr.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		for _, host := range []string{"node-1", "10.0.0.7", "localhost", "127.0.0.1", "::1"} {
			if err := cert.Leaf.VerifyHostname(host); err != nil {
				t.Errorf("%s: %v", host, err)
			}
		}
		if entries := logged(); len(entries) != 1 || !strings.Contains(fmt.Sprint(entries[0].ParameterKVList...), agent.Fingerprint(cert.Leaf)) {
			t.Errorf("log %+v, want the certificate's fingerprint", entries)
		}
	})
}
