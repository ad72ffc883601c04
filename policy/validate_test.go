package policy

import (
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	ok := Decision{Capture: true, Reason: "r", Files: 5, FileSizeBytes: 1_000_000, Format: FormatPcap,
		Filter: "tcp port 80 and (src net 10.0.0.0/8 or dst host 10.1.2.3)"}
	tests := []struct {
		name    string
		change  func(*Decision)
		limits  Limits
		wantErr string // substring; "" for valid
	}{
		{name: "valid"},
		{name: "no capture is always valid", change: func(d *Decision) { *d = Decision{Files: -1, Filter: "-z"} }},
		{name: "zero files", change: func(d *Decision) { d.Files = 0 }, wantErr: "files: must be from 1 to 64"},
		{name: "negative files", change: func(d *Decision) { d.Files = -3 }, wantErr: "files: must be from 1 to 64"},
		{name: "files over the node's cap", change: func(d *Decision) { d.Files = 9 }, limits: Limits{MaxFiles: 8}, wantErr: "files: must be from 1 to 8 on this node"},
		{name: "tiny files", change: func(d *Decision) { d.FileSizeBytes = 1000 }, wantErr: "file_size_bytes: must be from 65536 to 100000000"},
		{name: "huge files", change: func(d *Decision) { d.FileSizeBytes = 1 << 31 }, wantErr: "file_size_bytes: must be"},
		{name: "negative duration", change: func(d *Decision) { d.MaxDuration = Duration(-time.Second) }, wantErr: "max_duration: must be from 0"},
		{name: "too long", change: func(d *Decision) { d.MaxDuration = Duration(25 * time.Hour) }, wantErr: "max_duration: must be from 0 (no limit) to 24h0m0s"},
		{name: "grace and cooldown at their bounds", change: func(d *Decision) {
			d.StopGrace, d.Cooldown, d.Format = Duration(time.Hour), Duration(24*time.Hour), FormatPcapng
		}},
		{name: "empty format is pcap", change: func(d *Decision) { d.Format = "" }},
		{name: "negative stop grace", change: func(d *Decision) { d.StopGrace = Duration(-time.Second) }, wantErr: "stop_grace: must be from 0 to 1h0m0s on this node"},
		{name: "stop grace over the bound", change: func(d *Decision) { d.StopGrace = Duration(time.Hour + time.Second) }, wantErr: "stop_grace: must be from 0 to 1h0m0s"},
		{name: "stop grace over the node's bound", change: func(d *Decision) { d.StopGrace = Duration(2 * time.Minute) },
			limits: Limits{MaxStopGrace: time.Minute}, wantErr: "stop_grace: must be from 0 to 1m0s on this node"},
		{name: "negative cooldown", change: func(d *Decision) { d.Cooldown = Duration(-1) }, wantErr: "cooldown: must be from 0 to 24h0m0s on this node"},
		{name: "cooldown too long", change: func(d *Decision) { d.Cooldown = Duration(25 * time.Hour) }, wantErr: "cooldown: must be from 0 to 24h0m0s"},
		{name: "cooldown over the node's bound", change: func(d *Decision) { d.Cooldown = Duration(time.Hour) },
			limits: Limits{MaxCooldown: time.Minute}, wantErr: "cooldown: must be from 0 to 1m0s on this node"},
		{name: "unknown format", change: func(d *Decision) { d.Format = "erf" }, wantErr: `format: must be "pcap" or "pcapng"`},
		// the capture package's rules, checked by the agent (agent.CheckDecision)
		{name: "snaplen and filter are not policy's", change: func(d *Decision) { d.Snaplen, d.Filter = 1, "-z /tmp/x" }},
		{name: "every error", change: func(d *Decision) { d.Files, d.MaxDuration = 0, Duration(-1) },
			wantErr: "files: must be from 1 to 64 on this node\nmax_duration: must be from 0 (no limit) to 24h0m0s on this node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := ok
			if tt.change != nil {
				tt.change(&d)
			}
			err := d.Validate(tt.limits)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v\nwant an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestDefaultDecisionValid: a policy that says only {"capture": true} asks for a valid capture.
func TestDefaultDecisionValid(t *testing.T) {
	d, err := DecodeDecision(map[string]any{"capture": true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(Limits{}); err != nil {
		t.Errorf("default decision: %v", err)
	}
}
