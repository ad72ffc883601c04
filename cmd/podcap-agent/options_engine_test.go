package main

import (
	"strings"
	"testing"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/native"
)

// The default engine is tcpdump, the original tool's way (scripts count tcpdump processes);
// the native engine's ring defaults to native's and its node-wide bound holds 16 rings.
func TestOptionsEngineDefaults(t *testing.T) {
	o, err := parseOptions(t, "--node-name=n1")
	if err != nil || o.Engine != capture.EngineTcpdump || o.NativeBufferBytes != native.DefaultRingBytes || o.NativeBufferBudget != 512<<20 {
		t.Fatalf("defaults: engine %q, ring %d, budget %d, %v", o.Engine, o.NativeBufferBytes, o.NativeBufferBudget, err)
	}
}

func TestOptionsEngineValidate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error; "" valid
	}{
		{[]string{"--engine=native"}, ""},
		{[]string{"--engine=tcpdump"}, ""},
		{[]string{"--engine=native", "--native-buffer-bytes=1048576", "--native-buffer-budget=1048576"}, ""},
		{[]string{"--native-buffer-bytes=1073741824", "--native-buffer-budget=4294967296"}, ""},
		{[]string{"--engine=afpacket"}, `--engine "afpacket" must be tcpdump or native`},
		{[]string{"--engine="}, `--engine "" must be tcpdump or native`},
		{[]string{"--engine=Native"}, `--engine "Native"`},
		{[]string{"--native-buffer-bytes=1048575"}, "--native-buffer-bytes 1048575 must be from 1048576 to 1073741824"},
		{[]string{"--native-buffer-bytes=1073741825", "--native-buffer-budget=4294967296"}, "--native-buffer-bytes 1073741825 must be from"},
		{[]string{"--native-buffer-bytes=0"}, "--native-buffer-bytes 0"},
		{[]string{"--native-buffer-budget=33554431"}, "--native-buffer-budget 33554431 must be at least --native-buffer-bytes 33554432"},
		{[]string{"--native-buffer-bytes=67108864", "--native-buffer-budget=33554432"}, "must be at least --native-buffer-bytes 67108864"},
	} {
		_, err := parseOptions(t, append([]string{"--node-name=n1"}, tc.args...)...)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: error %v, want one that mentions %q", tc.args, err, tc.want)
		}
	}
}
