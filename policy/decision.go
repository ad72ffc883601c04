package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"time"
)

// Decision is data.podcap.decision, decoded strictly: a field the type does not have, or a
// value of the wrong type, is an error naming the field. When Capture is true, absent fields
// take the defaults below; when it is false, the other fields may be absent and are ignored
// (zero), but they must still have the right types.
type Decision struct {
	// Capture says whether the pod's traffic is captured.
	Capture bool `json:"capture"`
	// Reason says why, for Events, the API and logs: at most MaxReasonLen bytes of printable
	// text, whether the decision captures or not. Default "policy".
	Reason string `json:"reason"`
	// Files is the number of files of the ring. Default DefaultFiles.
	Files int `json:"files"`
	// FileSizeBytes is the size of one ring file. Default DefaultFileSizeBytes.
	FileSizeBytes int64 `json:"file_size_bytes"`
	// Snaplen is how many bytes of each packet are kept. Default 0: whole packets, the
	// capture's default. Its bounds are the capture package's, checked by the agent.
	Snaplen int `json:"snaplen"`
	// Filter is a BPF expression (tcpdump's syntax), "" for all traffic. Default "". It is
	// checked by the agent with the capture package's filter validator, not here.
	Filter string `json:"filter"`
	// MaxDuration ends the capture that long after it started, a Go duration string such as
	// "10m" or "1h30m" in Rego; 0 (the default) captures until the decision turns false.
	MaxDuration Duration `json:"max_duration"`
	// AlertFingerprints are the alerts that caused the capture, if any: each must be the
	// fingerprint of one of input.alerts (checked by the agent). Default empty.
	AlertFingerprints []string `json:"alert_fingerprints"`
	// StopGrace keeps the capture running this long after the decision turned false (to
	// record the recovery after an alert resolved), a Go duration string. Default 0.
	StopGrace Duration `json:"stop_grace"`
	// Cooldown: after a policy capture of the pod ended, no policy capture of the pod starts
	// again for this long (a flapping alert cannot restart captures in a loop). Default 0.
	Cooldown Duration `json:"cooldown"`
	// Format is the capture files' format: FormatPcap (the default) or FormatPcapng; ""
	// when the decision does not capture.
	Format string `json:"format,omitempty"`
	// Engine is the capture engine: EngineTcpdump or EngineNative; "" (absent, the
	// default) runs on the agent's --engine. The agent refuses a filter the native engine
	// cannot run exactly when the capture would run on it.
	Engine string `json:"engine,omitempty"`
}

// Capture engines of a decision; the same strings as the capture package's.
const (
	EngineTcpdump = "tcpdump"
	EngineNative  = "native"
)

// Capture file formats of a decision; the same strings as the capture package's.
const (
	FormatPcap   = "pcap"
	FormatPcapng = "pcapng"
)

// Defaults of a decision that captures.
const (
	DefaultReason        = "policy"
	DefaultFiles         = 5
	DefaultFileSizeBytes = 1_000_000 // tcpdump -C 1, the manual annotation's file size
)

// NoDecision is the reason of the decision of a policy that defines none for the pod.
const NoDecision = "no decision"

// noDecision is what an undefined data.podcap.decision means.
func noDecision() Decision { return Decision{Reason: NoDecision, AlertFingerprints: []string{}} }

// NoRecorder is the reason of the recorder of a policy that defines none for the pod.
const NoRecorder = "no recorder"

// noRecorder is what an undefined data.podcap.recorder means.
func noRecorder() Decision { return Decision{Reason: NoRecorder, AlertFingerprints: []string{}} }

// Defaults of a flight recorder (data.podcap.recorder) that records: a small ring.
const (
	DefaultRecorderFiles         = 2
	DefaultRecorderFileSizeBytes = 1_000_000
	DefaultRecorderReason        = "recorder"
)

// recorderFields are the fields of data.podcap.recorder: a recorder runs while it is decided,
// names no alerts, and has no end of its own (no max_duration, stop_grace or cooldown).
var recorderFields = map[string]bool{"capture": true, "reason": true, "files": true, "file_size_bytes": true,
	"snaplen": true, "filter": true, "format": true, "engine": true}

const recorderFieldNames = "capture, reason, files, file_size_bytes, snaplen, filter, format, engine"

// DecodeDecision decodes the value of data.podcap.decision as OPA returns it (encoding/json's
// generic types with json.Number, or float64), strictly, and applies the defaults.
func DecodeDecision(v any) (Decision, error) { return decode("decision", v) }

// DecodeRecorder decodes the value of data.podcap.recorder, the pod's flight recorder, as
// strictly as DecodeDecision: the fields of recorderFields only, with the recorder's defaults
// (DefaultRecorderFiles files of DefaultRecorderFileSizeBytes, reason "recorder").
func DecodeRecorder(v any) (Decision, error) { return decode("recorder", v) }

// decode decodes what decides a capture (name "decision") or a flight recorder ("recorder").
func decode(name string, v any) (Decision, error) {
	recorder := name == "recorder"
	obj, ok := v.(map[string]any)
	if !ok {
		return Decision{}, fmt.Errorf("%s: want an object, got %s", name, describe(v))
	}
	d := Decision{AlertFingerprints: []string{}}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys) // report the first bad field deterministically
	hasCapture := false
	var errs []error
	for _, k := range keys {
		var err error
		if recorder && !recorderFields[k] {
			errs = append(errs, fmt.Errorf("recorder.%s: unknown field (known: %s)", k, recorderFieldNames))
			continue
		}
		switch val := obj[k]; k {
		case "capture":
			hasCapture = true
			d.Capture, err = decodeBool(val)
		case "reason":
			if d.Reason, err = decodeString(val); err == nil {
				err = validateReason(d.Reason)
			}
		case "files":
			var n int64
			n, err = decodeInt(val)
			d.Files = int(n)
		case "file_size_bytes":
			d.FileSizeBytes, err = decodeInt(val)
		case "snaplen":
			var n int64
			n, err = decodeInt(val)
			d.Snaplen = int(n)
		case "filter":
			d.Filter, err = decodeString(val)
		case "max_duration":
			d.MaxDuration, err = decodeDuration(val)
		case "alert_fingerprints":
			d.AlertFingerprints, err = decodeStrings(val)
		case "stop_grace":
			d.StopGrace, err = decodeDuration(val)
		case "cooldown":
			d.Cooldown, err = decodeDuration(val)
		case "format":
			if d.Format, err = decodeString(val); err == nil && d.Format != FormatPcap && d.Format != FormatPcapng {
				err = fmt.Errorf("%q is not a capture format (want %q or %q)", short(d.Format), FormatPcap, FormatPcapng)
			}
		case "engine":
			if d.Engine, err = decodeString(val); err == nil && d.Engine != EngineTcpdump && d.Engine != EngineNative {
				err = fmt.Errorf("%q is not a capture engine (want %q or %q; leave it out for the agent's --engine)", short(d.Engine), EngineTcpdump, EngineNative)
			}
		default:
			err = errors.New("unknown field (known: " + decisionFields + ")")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", name, k, err))
		}
	}
	if !hasCapture {
		errs = append(errs, fmt.Errorf("%s.capture: missing: want true or false", name))
	}
	if len(errs) > 0 {
		return Decision{}, errors.Join(errs...)
	}
	if !d.Capture {
		return Decision{Reason: d.Reason, AlertFingerprints: []string{}}, nil
	}
	defaults := Decision{Reason: DefaultReason, Files: DefaultFiles, FileSizeBytes: DefaultFileSizeBytes}
	if recorder {
		defaults = Decision{Reason: DefaultRecorderReason, Files: DefaultRecorderFiles, FileSizeBytes: DefaultRecorderFileSizeBytes}
	}
	d.applyDefaults(obj, defaults)
	return d, nil
}

const decisionFields = "capture, reason, files, file_size_bytes, snaplen, filter, max_duration, alert_fingerprints, stop_grace, cooldown, format, engine"

// applyDefaults fills the fields the policy left out: reason, files and file size from def,
// which differ for a capture and a flight recorder.
func (d *Decision) applyDefaults(set map[string]any, def Decision) {
	if _, ok := set["reason"]; !ok {
		d.Reason = def.Reason
	}
	if _, ok := set["files"]; !ok {
		d.Files = def.Files
	}
	if _, ok := set["file_size_bytes"]; !ok {
		d.FileSizeBytes = def.FileSizeBytes
	}
	if _, ok := set["format"]; !ok {
		d.Format = FormatPcap
	}
	// snaplen stays 0, whole packets: its default and bounds are the capture package's
}

// UnmarshalJSON decodes a decision as strictly as DecodeDecision, with its defaults.
func (d *Decision) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("decision: %w", err)
	}
	x, err := DecodeDecision(v)
	if err != nil {
		return err
	}
	*d = x
	return nil
}

func decodeBool(v any) (bool, error) {
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("want true or false, got %s", describe(v))
	}
	return b, nil
}

func decodeString(v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("want a string, got %s", describe(v))
	}
	return s, nil
}

// decodeDuration reads a Go duration string ("90s", "10m"); no numbers, no "".
func decodeDuration(v any) (Duration, error) {
	s, err := decodeString(v)
	if err != nil {
		return 0, err
	}
	return ParseDuration(s)
}

func decodeStrings(v any) ([]string, error) {
	a, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("want a list of strings, got %s", describe(v))
	}
	out := make([]string, len(a))
	for i, e := range a {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("element %d: want a string, got %s", i, describe(e))
		}
		out[i] = s
	}
	return out, nil
}

// decodeInt accepts a number with an integral value (3, 3.0, 1e6) that fits in 32 bits, so
// that it fits an int everywhere; sizes bigger than that are out of every limit anyway.
func decodeInt(v any) (int64, error) {
	var f *big.Float
	switch n := v.(type) {
	case json.Number:
		var ok bool
		if f, ok = new(big.Float).SetString(n.String()); !ok {
			return 0, fmt.Errorf("want an integer, got %s", describe(v))
		}
	case float64:
		f = big.NewFloat(n)
	default:
		return 0, fmt.Errorf("want an integer, got %s", describe(v))
	}
	if !f.IsInt() {
		return 0, fmt.Errorf("want an integer, got %s", describe(v))
	}
	i, acc := f.Int64()
	if acc != big.Exact || i > math.MaxInt32 || i < math.MinInt32 {
		return 0, fmt.Errorf("%s is out of range", f.Text('g', 20))
	}
	return i, nil
}

// describe names a JSON value's type and shows it, shortened, for error messages.
func describe(v any) string {
	kind := "null"
	switch v.(type) {
	case bool:
		kind = "boolean"
	case string:
		kind = "string"
	case json.Number, float64:
		kind = "number"
	case []any:
		kind = "list"
	case map[string]any:
		kind = "object"
	}
	if v == nil {
		return kind
	}
	b, err := json.Marshal(v)
	if err != nil {
		return kind
	}
	s := string(b)
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return kind + " " + s
}

// Duration is a time.Duration written as a Go duration string ("90s", "10m", "1h30m") in
// JSON and in Rego. Its JSON decoding accepts nothing else: no numbers, no "".
type Duration time.Duration

// ParseDuration parses a Go duration string, with a message for policy authors.
func ParseDuration(s string) (Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a Go duration (want e.g. \"90s\", \"10m\", \"1h30m\"; \"0\" for none)", short(s))
	}
	return Duration(d), nil
}

// String is the Go duration string.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a Go duration string, strictly.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"10m\", got %s", b)
	}
	x, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = x
	return nil
}
