package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecodeDecision(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		want    Decision
		wantErr string // substring; "" for success
	}{
		{
			name: "capture with defaults",
			json: `{"capture": true}`,
			want: Decision{Capture: true, Reason: DefaultReason, Files: DefaultFiles, FileSizeBytes: DefaultFileSizeBytes,
				AlertFingerprints: []string{}, Format: FormatPcap},
		},
		{
			name: "every field",
			json: `{"capture": true, "reason": "r", "files": 3, "file_size_bytes": 2e6, "snaplen": 128.0,
				"filter": "udp port 53", "max_duration": "1h30m", "alert_fingerprints": ["a", "b"],
				"stop_grace": "2m", "cooldown": "5m30s", "format": "pcapng", "engine": "native"}`,
			want: Decision{Capture: true, Reason: "r", Files: 3, FileSizeBytes: 2_000_000, Snaplen: 128,
				Filter: "udp port 53", MaxDuration: Duration(90 * time.Minute), AlertFingerprints: []string{"a", "b"},
				StopGrace: Duration(2 * time.Minute), Cooldown: Duration(5*time.Minute + 30*time.Second), Format: FormatPcapng,
				Engine: EngineNative},
		},
		{
			name: "no capture ignores the rest",
			json: `{"capture": false, "reason": "denied", "files": 3, "filter": "-z x"}`,
			want: Decision{Reason: "denied", AlertFingerprints: []string{}},
		},
		{name: "empty filter and zero duration", json: `{"capture": true, "filter": "", "max_duration": "0"}`,
			want: Decision{Capture: true, Reason: DefaultReason, Files: DefaultFiles, FileSizeBytes: DefaultFileSizeBytes, AlertFingerprints: []string{}, Format: FormatPcap}},
		{name: "format pcap", json: `{"capture": true, "format": "pcap"}`,
			want: Decision{Capture: true, Reason: DefaultReason, Files: DefaultFiles, FileSizeBytes: DefaultFileSizeBytes, AlertFingerprints: []string{}, Format: FormatPcap}},
		{name: "no capture ignores grace, cooldown and format", json: `{"capture": false, "stop_grace": "1m", "cooldown": "1m", "format": "pcapng"}`,
			want: Decision{Reason: "", AlertFingerprints: []string{}}},

		{name: "not an object", json: `true`, wantErr: "decision: want an object, got boolean true"},
		{name: "a list", json: `[{"capture": true}]`, wantErr: "decision: want an object, got list"},
		{name: "capture missing", json: `{"files": 3}`, wantErr: "decision.capture: missing"},
		{name: "capture as string", json: `{"capture": "yes"}`, wantErr: `decision.capture: want true or false, got string "yes"`},
		{name: "capture as number", json: `{"capture": 1}`, wantErr: `decision.capture: want true or false, got number 1`},
		{name: "capture null", json: `{"capture": null}`, wantErr: `decision.capture: want true or false, got null`},
		{name: "unknown field", json: `{"capture": true, "file": 3}`, wantErr: "decision.file: unknown field (known: capture, reason"},
		{name: "files as string", json: `{"capture": true, "files": "3"}`, wantErr: `decision.files: want an integer, got string "3"`},
		{name: "fractional files", json: `{"capture": true, "files": 2.5}`, wantErr: "decision.files: want an integer, got number 2.5"},
		{name: "huge files", json: `{"capture": true, "files": 1e300}`, wantErr: "decision.files: 1e+300 is out of range"},
		{name: "snaplen bool", json: `{"capture": true, "snaplen": true}`, wantErr: "decision.snaplen: want an integer, got boolean"},
		{name: "file size object", json: `{"capture": true, "file_size_bytes": {}}`, wantErr: "decision.file_size_bytes: want an integer, got object"},
		{name: "filter as list", json: `{"capture": true, "filter": ["udp"]}`, wantErr: `decision.filter: want a string, got list ["udp"]`},
		{name: "reason number", json: `{"capture": true, "reason": 7}`, wantErr: "decision.reason: want a string, got number 7"},
		{name: "reason of 256 bytes", json: `{"capture": true, "reason": "` + strings.Repeat("é", 128) + `"}`,
			want: Decision{Capture: true, Reason: strings.Repeat("é", 128), Files: DefaultFiles, FileSizeBytes: DefaultFileSizeBytes, AlertFingerprints: []string{}, Format: FormatPcap}},
		{name: "reason too long", json: `{"capture": true, "reason": "` + strings.Repeat("x", 257) + `"}`, wantErr: "decision.reason: 257 bytes, longer than the limit of 256"},
		{name: "reason too long without capture", json: `{"capture": false, "reason": "` + strings.Repeat("x", 300) + `"}`, wantErr: "decision.reason: 300 bytes"},
		{name: "reason with a newline", json: `{"capture": true, "reason": "ok\nforged: line"}`, wantErr: "decision.reason: byte 2 is U+000A: want printable text on one line"},
		{name: "reason with a tab", json: `{"capture": true, "reason": "a\tb"}`, wantErr: "decision.reason: byte 1 is U+0009"},
		{name: "reason with a bidi override", json: `{"capture": true, "reason": "a\u202eb"}`, wantErr: "decision.reason: byte 1 is U+202E"},
		{name: "reason with ESC", json: `{"capture": true, "reason": "\u001b[31mred"}`, wantErr: "decision.reason: byte 0 is U+001B"},
		{name: "duration number", json: `{"capture": true, "max_duration": 600}`, wantErr: "decision.max_duration: want a string, got number 600"},
		{name: "duration without unit", json: `{"capture": true, "max_duration": "600"}`, wantErr: `decision.max_duration: "600" is not a Go duration`},
		{name: "duration empty", json: `{"capture": true, "max_duration": ""}`, wantErr: `decision.max_duration: "" is not a Go duration`},
		{name: "duration days", json: `{"capture": true, "max_duration": "1d"}`, wantErr: `"1d" is not a Go duration`},
		{name: "duration words", json: `{"capture": true, "max_duration": "ten minutes"}`, wantErr: `"ten minutes" is not a Go duration`},
		{name: "stop grace number", json: `{"capture": true, "stop_grace": 120}`, wantErr: "decision.stop_grace: want a string, got number 120"},
		{name: "stop grace without unit", json: `{"capture": true, "stop_grace": "120"}`, wantErr: `decision.stop_grace: "120" is not a Go duration`},
		{name: "cooldown empty", json: `{"capture": true, "cooldown": ""}`, wantErr: `decision.cooldown: "" is not a Go duration`},
		{name: "cooldown bool", json: `{"capture": true, "cooldown": true}`, wantErr: "decision.cooldown: want a string, got boolean"},
		{name: "format unknown", json: `{"capture": true, "format": "pcap-ng"}`, wantErr: `decision.format: "pcap-ng" is not a capture format (want "pcap" or "pcapng")`},
		{name: "format upper case", json: `{"capture": true, "format": "PCAPNG"}`, wantErr: `decision.format: "PCAPNG" is not a capture format`},
		{name: "format empty", json: `{"capture": true, "format": ""}`, wantErr: `decision.format: "" is not a capture format`},
		{name: "format number", json: `{"capture": true, "format": 1}`, wantErr: "decision.format: want a string, got number 1"},
		{name: "bad format even without capture", json: `{"capture": false, "format": "txt"}`, wantErr: "decision.format: "},
		{name: "engine tcpdump", json: `{"capture": true, "engine": "tcpdump"}`,
			want: Decision{Capture: true, Reason: DefaultReason, Files: DefaultFiles, FileSizeBytes: DefaultFileSizeBytes, AlertFingerprints: []string{}, Format: FormatPcap, Engine: EngineTcpdump}},
		{name: "engine unknown", json: `{"capture": true, "engine": "afpacket"}`, wantErr: `decision.engine: "afpacket" is not a capture engine (want "tcpdump" or "native"; leave it out for the agent's --engine)`},
		{name: "engine upper case", json: `{"capture": true, "engine": "Native"}`, wantErr: `decision.engine: "Native" is not a capture engine`},
		{name: "engine empty", json: `{"capture": true, "engine": ""}`, wantErr: `decision.engine: "" is not a capture engine`},
		{name: "engine not a string", json: `{"capture": true, "engine": true}`, wantErr: "decision.engine: want a string, got boolean true"},
		{name: "bad engine even without capture", json: `{"capture": false, "engine": "x"}`, wantErr: "decision.engine: "},
		{name: "fingerprints string", json: `{"capture": true, "alert_fingerprints": "a"}`, wantErr: "decision.alert_fingerprints: want a list of strings"},
		{name: "fingerprints numbers", json: `{"capture": true, "alert_fingerprints": ["a", 1]}`, wantErr: "decision.alert_fingerprints: element 1: want a string, got number 1"},
		{name: "wrong types even without capture", json: `{"capture": false, "files": "3"}`, wantErr: "decision.files: want an integer"},
		{name: "every error at once", json: `{"capture": "yes", "files": "3", "x": 1}`, wantErr: "decision.capture: want true or false, got string \"yes\"\ndecision.files: want an integer, got string \"3\"\ndecision.x: unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Decision
			err := json.Unmarshal([]byte(tt.json), &got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decision = %+v\nwant       %+v", got, tt.want)
			}
		})
	}
}

// TestDecodeDecisionFloat covers the float64 numbers of a plain json.Unmarshal into any.
func TestDecodeDecisionFloat(t *testing.T) {
	d, err := DecodeDecision(map[string]any{"capture": true, "files": float64(3)})
	if err != nil || d.Files != 3 {
		t.Fatalf("decision %+v, %v", d, err)
	}
	if _, err := DecodeDecision(map[string]any{"capture": true, "files": 3}); err == nil {
		t.Error("an int is not a JSON value: want an error")
	}
}

func TestDecisionJSONRoundTrip(t *testing.T) {
	d := Decision{Capture: true, Reason: "r", Files: 2, FileSizeBytes: 1 << 20, Snaplen: 96,
		Filter: "tcp", MaxDuration: Duration(10 * time.Minute), AlertFingerprints: []string{"f"},
		StopGrace: Duration(time.Minute), Cooldown: Duration(time.Hour), Format: FormatPcapng, Engine: EngineNative}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"max_duration":"10m0s"`) {
		t.Errorf("json = %s", b)
	}
	var back Decision
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, d) {
		t.Errorf("round trip = %+v, want %+v", back, d)
	}
	// a decision that does not capture round-trips too: its empty format is left out
	no := Decision{Reason: "no", AlertFingerprints: []string{}}
	if b, err = json.Marshal(no); err != nil {
		t.Fatal(err)
	}
	back = Decision{}
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, no) {
		t.Errorf("round trip of %s = %+v, %v", b, back, err)
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	for _, bad := range []string{`600`, `""`, `"10"`, `null`, `"-"`} {
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("Duration %s: no error", bad)
		}
	}
	if err := json.Unmarshal([]byte(`"1h2m3s"`), &d); err != nil || time.Duration(d) != time.Hour+2*time.Minute+3*time.Second {
		t.Errorf("Duration = %v, %v", d, err)
	}
}
