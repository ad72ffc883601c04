package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits bound what a decision may ask of the node. A zero field takes DefaultLimits' value.
type Limits struct {
	MaxFiles         int           // ring files per capture
	MaxFileSizeBytes int64         // bytes per ring file
	MinSnaplen       int           // bytes kept of each packet, at least
	MaxSnaplen       int           // and at most
	MaxDuration      time.Duration // longest max_duration
	MaxFilterLen     int           // bytes of the BPF filter
}

// MinFileSizeBytes is the smallest ring file a decision may ask for: smaller files rotate
// every few packets, and the number is more likely a unit mistake (KB for bytes).
const MinFileSizeBytes = 64 << 10

// DefaultLimits are the limits of a node that sets none.
func DefaultLimits() Limits {
	return Limits{
		MaxFiles:         64,          // the agent's --max-files default
		MaxFileSizeBytes: 100_000_000, // tcpdump -C 100
		MinSnaplen:       64,          // link, IPv4 and transport headers
		MaxSnaplen:       262144,      // tcpdump's maximum
		MaxDuration:      24 * time.Hour,
		MaxFilterLen:     1024,
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
	if l.MinSnaplen == 0 {
		l.MinSnaplen = d.MinSnaplen
	}
	if l.MaxSnaplen == 0 {
		l.MaxSnaplen = d.MaxSnaplen
	}
	if l.MaxDuration == 0 {
		l.MaxDuration = d.MaxDuration
	}
	if l.MaxFilterLen == 0 {
		l.MaxFilterLen = d.MaxFilterLen
	}
	return l
}

// Validate checks a decision that captures against the limits and returns every violation,
// in words for the pod's Events. A decision that does not capture is always valid.
//
// The filter check is what can be decided without tcpdump: length, printable ASCII only, no
// leading '-', none of ; $ ` (never part of a BPF expression; refused so that a value meant for
// a shell is reported as such). Whether the rest is BPF is `tcpdump -d`'s call, made by the
// capture package before any capture starts.
func (d Decision) Validate(l Limits) error {
	if !d.Capture {
		return nil
	}
	l = l.withDefaults()
	var errs []error
	if d.Files < 1 || d.Files > l.MaxFiles {
		errs = append(errs, fmt.Errorf("files %d: must be from 1 to %d on this node", d.Files, l.MaxFiles))
	}
	if d.FileSizeBytes < MinFileSizeBytes || d.FileSizeBytes > l.MaxFileSizeBytes {
		errs = append(errs, fmt.Errorf("file_size_bytes %d: must be from %d to %d on this node", d.FileSizeBytes, MinFileSizeBytes, l.MaxFileSizeBytes))
	}
	if d.Snaplen < l.MinSnaplen || d.Snaplen > l.MaxSnaplen {
		errs = append(errs, fmt.Errorf("snaplen %d: must be from %d to %d on this node", d.Snaplen, l.MinSnaplen, l.MaxSnaplen))
	}
	if md := time.Duration(d.MaxDuration); md < 0 || md > l.MaxDuration {
		errs = append(errs, fmt.Errorf("max_duration %s: must be from 0 (no limit) to %s on this node", md, l.MaxDuration))
	}
	if err := ValidateFilter(d.Filter, l.MaxFilterLen); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid decision: %w", errors.Join(errs...))
	}
	return nil
}

// ValidateFilter makes the checks of a BPF filter that need no tcpdump (see Decision.Validate).
func ValidateFilter(filter string, maxLen int) error {
	if len(filter) > maxLen {
		return fmt.Errorf("filter: %d bytes, longer than the limit of %d", len(filter), maxLen)
	}
	for i := 0; i < len(filter); i++ {
		if c := filter[i]; c < ' ' || c > '~' {
			return fmt.Errorf("filter: byte %d is %q: a BPF filter is printable ASCII on one line (no control characters, tabs, newlines or NUL)", i, c)
		}
	}
	if strings.HasPrefix(strings.TrimLeft(filter, " "), "-") {
		return fmt.Errorf("filter %q: starts with '-': tcpdump would read it as an option", short(filter))
	}
	if i := strings.IndexAny(filter, ";$`"); i >= 0 {
		return fmt.Errorf("filter %q: %q is not part of BPF syntax (a filter is handed to tcpdump as one argument, never to a shell)", short(filter), filter[i])
	}
	return nil
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

// short shortens a filter for messages.
func short(s string) string {
	if len(s) > 64 {
		return s[:61] + "..."
	}
	return s
}
