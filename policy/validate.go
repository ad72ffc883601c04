package policy

import (
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits bound what a decision may ask of the node (the agent's flags). A zero field takes
// DefaultLimits' value.
//
// The snaplen and the filter are not here: what tcpdump accepts is the capture package's rule
// (agent/capture: CheckSnaplen, FilterChecker), which this package cannot import; the agent
// checks them where a decision becomes a capture.Spec, with the same code as every capture.
type Limits struct {
	MaxFiles         int           // ring files per capture
	MaxFileSizeBytes int64         // bytes per ring file
	MaxDuration      time.Duration // longest max_duration
	MaxStopGrace     time.Duration // longest stop_grace
	MaxCooldown      time.Duration // longest cooldown
}

// MinFileSizeBytes is the smallest ring file a decision may ask for: smaller files rotate
// every few packets, and the number is more likely a unit mistake (KB for bytes).
const MinFileSizeBytes = 64 << 10

// DefaultLimits are the limits of a node that sets none.
func DefaultLimits() Limits {
	return Limits{
		MaxFiles:         64,          // the agent's --max-files default
		MaxFileSizeBytes: 100_000_000, // tcpdump -C 100
		MaxDuration:      24 * time.Hour,
		MaxStopGrace:     time.Hour,
		MaxCooldown:      24 * time.Hour,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFiles == 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxFileSizeBytes == 0 {
		l.MaxFileSizeBytes = d.MaxFileSizeBytes
	}
	if l.MaxDuration == 0 {
		l.MaxDuration = d.MaxDuration
	}
	if l.MaxStopGrace == 0 {
		l.MaxStopGrace = d.MaxStopGrace
	}
	if l.MaxCooldown == 0 {
		l.MaxCooldown = d.MaxCooldown
	}
	return l
}

// Validate checks a decision that captures against the node's limits and returns every
// violation, one a line, for the pod's Events. A decision that does not capture is always
// valid. The snaplen and the filter are the agent's to check (see Limits).
//
// The messages name the field and the bound, not the value: a rule may compute a value from
// input.now (rules/debug-until.rego's max_duration), and a message that changed at every
// evaluation would be a new Event each time instead of one (Kubernetes folds only identical
// Events). `podcap-agent policy eval` and the agent's API show the decision's values.
func (d Decision) Validate(l Limits) error {
	if !d.Capture {
		return nil
	}
	l = l.withDefaults()
	var errs []error
	if d.Files < 1 || d.Files > l.MaxFiles {
		errs = append(errs, fmt.Errorf("files: must be from 1 to %d on this node", l.MaxFiles))
	}
	if d.FileSizeBytes < MinFileSizeBytes || d.FileSizeBytes > l.MaxFileSizeBytes {
		errs = append(errs, fmt.Errorf("file_size_bytes: must be from %d to %d on this node", MinFileSizeBytes, l.MaxFileSizeBytes))
	}
	if md := time.Duration(d.MaxDuration); md < 0 || md > l.MaxDuration {
		errs = append(errs, fmt.Errorf("max_duration: must be from 0 (no limit) to %s on this node", l.MaxDuration))
	}
	if g := time.Duration(d.StopGrace); g < 0 || g > l.MaxStopGrace {
		errs = append(errs, fmt.Errorf("stop_grace: must be from 0 to %s on this node", l.MaxStopGrace))
	}
	if c := time.Duration(d.Cooldown); c < 0 || c > l.MaxCooldown {
		errs = append(errs, fmt.Errorf("cooldown: must be from 0 to %s on this node", l.MaxCooldown))
	}
	if d.Format != "" && d.Format != FormatPcap && d.Format != FormatPcapng { // "": pcap (a Go caller's zero value)
		errs = append(errs, fmt.Errorf("format: must be %q or %q", FormatPcap, FormatPcapng))
	}
	return errors.Join(errs...)
}

// MaxReasonLen bounds a decision's reason in bytes: it is copied into Events, logs, the API
// and capture.json, and rules often build it from pod data (labels, annotations).
const MaxReasonLen = 256

// validateReason accepts at most MaxReasonLen bytes of printable text on one line (any
// script; no control or format characters, tabs or newlines). The error never quotes it.
func validateReason(s string) error {
	if len(s) > MaxReasonLen {
		return fmt.Errorf("%d bytes, longer than the limit of %d", len(s), MaxReasonLen)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for i, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("byte %d is %U: want printable text on one line (no control or format characters, tabs or newlines)", i, r)
		}
	}
	return nil
}

// short shortens a value for messages.
func short(s string) string {
	if len(s) > 64 {
		return s[:61] + "..."
	}
	return s
}
