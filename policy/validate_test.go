package policy

import (
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	ok := Decision{Capture: true, Reason: "r", Files: 5, FileSizeBytes: 1_000_000, Snaplen: 262144,
		Filter: "tcp port 80 and (src net 10.0.0.0/8 or dst host 10.1.2.3)"}
	tests := []struct {
		name    string
		change  func(*Decision)
		limits  Limits
		wantErr string // substring; "" for valid
	}{
		{name: "valid"},
		{name: "valid BPF operators", change: func(d *Decision) { d.Filter = `tcp[tcpflags] & (tcp-syn|tcp-ack) != 0 && len > 64 || ether proto \arp` }},
		{name: "no capture is always valid", change: func(d *Decision) { *d = Decision{Files: -1, Filter: "-z"} }},
		{name: "zero files", change: func(d *Decision) { d.Files = 0 }, wantErr: "files 0: must be from 1 to 64"},
		{name: "negative files", change: func(d *Decision) { d.Files = -3 }, wantErr: "files -3: must be from 1 to 64"},
		{name: "files over the node's cap", change: func(d *Decision) { d.Files = 9 }, limits: Limits{MaxFiles: 8}, wantErr: "files 9: must be from 1 to 8 on this node"},
		{name: "tiny files", change: func(d *Decision) { d.FileSizeBytes = 1000 }, wantErr: "file_size_bytes 1000: must be from 65536 to 100000000"},
		{name: "huge files", change: func(d *Decision) { d.FileSizeBytes = 1 << 31 }, wantErr: "file_size_bytes 2147483648"},
		{name: "snaplen 0", change: func(d *Decision) { d.Snaplen = 0 }, wantErr: "snaplen 0: must be from 64 to 262144"},
		{name: "snaplen over", change: func(d *Decision) { d.Snaplen = 262145 }, wantErr: "snaplen 262145"},
		{name: "snaplen limits", change: func(d *Decision) { d.Snaplen = 100 }, limits: Limits{MinSnaplen: 128, MaxSnaplen: 1500}, wantErr: "snaplen 100: must be from 128 to 1500"},
		{name: "negative duration", change: func(d *Decision) { d.MaxDuration = Duration(-time.Second) }, wantErr: "max_duration -1s: must be from 0"},
		{name: "too long", change: func(d *Decision) { d.MaxDuration = Duration(25 * time.Hour) }, wantErr: "max_duration 25h0m0s: must be from 0 (no limit) to 24h0m0s"},
		{name: "option", change: func(d *Decision) { d.Filter = "-z /tmp/x" }, wantErr: `filter "-z /tmp/x": starts with '-'`},
		{name: "option after blanks", change: func(d *Decision) { d.Filter = "  -w/etc/passwd" }, wantErr: "starts with '-'"},
		{name: "shell list", change: func(d *Decision) { d.Filter = "; rm -rf /" }, wantErr: `';' is not part of BPF syntax`},
		{name: "shell substitution", change: func(d *Decision) { d.Filter = "tcp $(reboot)" }, wantErr: `'$' is not part of BPF syntax`},
		{name: "backquote", change: func(d *Decision) { d.Filter = "tcp `reboot`" }, wantErr: "'`' is not part of BPF syntax"},
		{name: "5 KB", change: func(d *Decision) { d.Filter = strings.Repeat("tcp or ", 730) + "tcp" }, wantErr: "filter: 5113 bytes, longer than the limit of 1024"},
		{name: "filter limit", change: func(d *Decision) { d.Filter = "udp port 53" }, limits: Limits{MaxFilterLen: 8}, wantErr: "longer than the limit of 8"},
		{name: "NUL", change: func(d *Decision) { d.Filter = "tcp\x00-z" }, wantErr: `byte 3 is '\x00'`},
		{name: "newline", change: func(d *Decision) { d.Filter = "tcp\nudp" }, wantErr: `byte 3 is '\n'`},
		{name: "tab", change: func(d *Decision) { d.Filter = "tcp\tor udp" }, wantErr: `byte 3 is '\t'`},
		{name: "escape", change: func(d *Decision) { d.Filter = "\x1b[2J" }, wantErr: `byte 0 is '\x1b'`},
		{name: "non-ASCII", change: func(d *Decision) { d.Filter = "host café" }, wantErr: "byte 8 is"},
		{name: "every error", change: func(d *Decision) { d.Files, d.Snaplen, d.Filter = 0, 1, "-x" },
			wantErr: "invalid decision: files 0: must be from 1 to 64 on this node\nsnaplen 1: must be from 64 to 262144 on this node\nfilter \"-x\": starts with '-'"},
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
