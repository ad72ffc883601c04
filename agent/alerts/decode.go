package alerts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"
	"unicode"
	"unicode/utf8"
)

// Version is the only webhook payload version [Decode] accepts; Alertmanager has sent "4"
// since 0.8.
const Version = "4"

// Alert statuses, in a notification and in each of its alerts.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

var (
	// ErrTooLarge is returned when the body exceeds [Limits.MaxBodyBytes]: answer 413.
	ErrTooLarge = errors.New("webhook body too large")
	// ErrInvalid is wrapped by every error about the payload's content (malformed JSON,
	// wrong version, missing or out-of-bounds field): answer 400 with the error's text.
	ErrInvalid = errors.New("invalid webhook payload")
	// ErrVersion is returned, wrapped, for a payload whose version is not [Version]. It wraps
	// [ErrInvalid].
	ErrVersion = fmt.Errorf("%w: unsupported version", ErrInvalid)
)

// Notification is one Alertmanager webhook notification: one group of alerts sent to one
// receiver.
type Notification struct {
	// Receiver is the name of the Alertmanager receiver that sent it; informative only.
	Receiver string
	// GroupKey identifies the alert group in Alertmanager; informative only.
	GroupKey string
	// Status is the group's status: "firing" while any of its alerts fires. Act on each
	// alert's own status instead.
	Status string
	// TruncatedAlerts is how many alerts of the group Alertmanager left out because of its
	// receiver's max_alerts.
	TruncatedAlerts int
	// Alerts has between 1 and [Limits.MaxAlerts] alerts, with distinct fingerprints.
	Alerts []Alert
}

// Alert is one alert of a notification. After [Decode], Labels is never empty, Annotations is
// never nil, and every name and value is valid UTF-8 within [Limits].
type Alert struct {
	// Fingerprint is Alertmanager's identity of the alert (a hash of its labels): 16
	// lowercase hexadecimal digits.
	Fingerprint string
	// Status is "firing" or "resolved".
	Status      string
	Labels      map[string]string
	Annotations map[string]string
	StartsAt    time.Time
	// EndsAt is zero while the alert fires with no known end (Alertmanager hides an end
	// that has not passed yet).
	EndsAt       time.Time
	GeneratorURL string
}

// Active reports whether the alert fires at now: its own status is firing and its end, if
// known, is after now.
func (a Alert) Active(now time.Time) bool {
	return a.Status == StatusFiring && (a.EndsAt.IsZero() || a.EndsAt.After(now))
}

// Limits bounds what [Decode] accepts. A field that is zero or negative takes its default.
type Limits struct {
	// MaxBodyBytes bounds the body; default 1 MiB, room for the default MaxAlerts alerts of
	// ~5 KiB each (a real alert with a few labels and a description is 0.5–2 KiB).
	MaxBodyBytes int64
	// MaxAlerts bounds the alerts in one notification; default 200. Each alert becomes a
	// CaptureAlert object, so this also bounds one request's writes to the API server. Set
	// the receiver's max_alerts to it.
	MaxAlerts int
	// MaxLabels bounds the labels of one alert, and separately its annotations; default 64.
	MaxLabels int
	// MaxNameBytes bounds a label or annotation name; default 256.
	MaxNameBytes int
	// MaxLabelValueBytes bounds a label value; default 1 KiB. Labels are the alert's
	// identity and are quoted into Events and policy inputs.
	MaxLabelValueBytes int
	// MaxAnnotationValueBytes bounds an annotation value; default 8 KiB. Annotations carry
	// descriptions and runbook text, which are longer than labels; an Event quoting one
	// truncates it itself.
	MaxAnnotationValueBytes int
}

// Default limits; see [Limits] for why.
const (
	DefaultMaxBodyBytes            = 1 << 20
	DefaultMaxAlerts               = 200
	DefaultMaxLabels               = 64
	DefaultMaxNameBytes            = 256
	DefaultMaxLabelValueBytes      = 1 << 10
	DefaultMaxAnnotationValueBytes = 8 << 10
)

// WithDefaults returns l with every unset (zero or negative) field set to its default.
func (l Limits) WithDefaults() Limits {
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if l.MaxAlerts <= 0 {
		l.MaxAlerts = DefaultMaxAlerts
	}
	if l.MaxLabels <= 0 {
		l.MaxLabels = DefaultMaxLabels
	}
	if l.MaxNameBytes <= 0 {
		l.MaxNameBytes = DefaultMaxNameBytes
	}
	if l.MaxLabelValueBytes <= 0 {
		l.MaxLabelValueBytes = DefaultMaxLabelValueBytes
	}
	if l.MaxAnnotationValueBytes <= 0 {
		l.MaxAnnotationValueBytes = DefaultMaxAnnotationValueBytes
	}
	return l
}

// wireNotification and wireAlert are the webhook's JSON, only the fields podcap reads; the
// others (groupLabels, commonLabels, commonAnnotations, externalURL, …) are ignored.
type wireNotification struct {
	Version         string      `json:"version"`
	Receiver        string      `json:"receiver"`
	GroupKey        string      `json:"groupKey"`
	Status          string      `json:"status"`
	TruncatedAlerts int         `json:"truncatedAlerts"`
	Alerts          []wireAlert `json:"alerts"`
}

type wireAlert struct {
	Fingerprint  string            `json:"fingerprint"`
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
}

// Decode reads one webhook notification from r and validates it against lim (defaults for
// unset fields). It reads at most lim.MaxBodyBytes+1 bytes: a longer body is [ErrTooLarge]
// and a body of exactly MaxBodyBytes is read whole. The body must be valid UTF-8 holding one
// JSON object and nothing after it but white space. Unknown fields are ignored; field names
// match case-insensitively, as encoding/json does. Errors about the content wrap
// [ErrInvalid]; a read error is returned wrapped as it is.
func Decode(r io.Reader, lim Limits) (Notification, error) {
	lim = lim.WithDefaults()
	body, err := io.ReadAll(io.LimitReader(r, lim.MaxBodyBytes+1))
	if err != nil {
		return Notification{}, fmt.Errorf("read webhook body: %w", err)
	}
	if int64(len(body)) > lim.MaxBodyBytes {
		return Notification{}, fmt.Errorf("%w: over %d bytes", ErrTooLarge, lim.MaxBodyBytes)
	}
	// encoding/json would replace invalid UTF-8 with U+FFFD silently: refuse it instead.
	if !utf8.Valid(body) {
		return Notification{}, fmt.Errorf("%w: body is not valid UTF-8", ErrInvalid)
	}
	var w wireNotification
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		return Notification{}, fmt.Errorf("%w: %s", ErrInvalid, describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return Notification{}, fmt.Errorf("%w: data after the JSON object", ErrInvalid)
	}
	return validate(w, lim)
}

// describeJSONError says what is wrong with the body in the sender's terms (JSON types and
// field paths), not encoding/json's (Go types of this package).
func describeJSONError(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	case errors.As(err, &syntax):
		return fmt.Sprintf("malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		// encoding/json names the path without array indexes; the offset locates the alert.
		return fmt.Sprintf("%s: JSON %s where %s is expected (byte %d)", field, typ.Value, jsonKind(typ.Type.Kind()), typ.Offset)
	default:
		// A time field's own error: "parsing time …".
		return err.Error()
	}
}

func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Int:
		return "an integer"
	case reflect.Slice:
		return "an array"
	default: // struct, map
		return "an object"
	}
}

// validate turns the wire form into a Notification, checking what the package doc promises.
func validate(w wireNotification, lim Limits) (Notification, error) {
	if w.Version != Version {
		return Notification{}, fmt.Errorf("%w: version %s, want %q", ErrVersion, quote(w.Version), Version)
	}
	if w.Status != StatusFiring && w.Status != StatusResolved {
		return Notification{}, fmt.Errorf("%w: status %s, want %q or %q", ErrInvalid, quote(w.Status), StatusFiring, StatusResolved)
	}
	if w.TruncatedAlerts < 0 {
		return Notification{}, fmt.Errorf("%w: truncatedAlerts %d is negative", ErrInvalid, w.TruncatedAlerts)
	}
	switch {
	case len(w.Alerts) == 0:
		return Notification{}, fmt.Errorf("%w: alerts missing or empty", ErrInvalid)
	case len(w.Alerts) > lim.MaxAlerts:
		return Notification{}, fmt.Errorf("%w: %d alerts, at most %d (set the receiver's max_alerts)", ErrInvalid, len(w.Alerts), lim.MaxAlerts)
	}
	n := Notification{
		Receiver:        w.Receiver,
		GroupKey:        w.GroupKey,
		Status:          w.Status,
		TruncatedAlerts: w.TruncatedAlerts,
		Alerts:          make([]Alert, len(w.Alerts)),
	}
	seen := make(map[string]int, len(w.Alerts))
	for i, wa := range w.Alerts {
		a, err := validateAlert(wa, lim)
		if err != nil {
			return Notification{}, fmt.Errorf("%w: alerts[%d].%v", ErrInvalid, i, err)
		}
		if j, ok := seen[a.Fingerprint]; ok {
			return Notification{}, fmt.Errorf("%w: alerts[%d].fingerprint %s repeats alerts[%d]", ErrInvalid, i, a.Fingerprint, j)
		}
		seen[a.Fingerprint] = i
		n.Alerts[i] = a
	}
	return n, nil
}

// validateAlert checks one alert. Its errors start with the field's name, for the caller to
// prefix with the alert's index.
func validateAlert(wa wireAlert, lim Limits) (Alert, error) {
	if !validFingerprint(wa.Fingerprint) {
		return Alert{}, fmt.Errorf("fingerprint %s is not 16 lowercase hexadecimal digits", quote(wa.Fingerprint))
	}
	if wa.Status != StatusFiring && wa.Status != StatusResolved {
		return Alert{}, fmt.Errorf("status %s, want %q or %q", quote(wa.Status), StatusFiring, StatusResolved)
	}
	if wa.StartsAt.IsZero() {
		return Alert{}, errors.New("startsAt missing")
	}
	if len(wa.Labels) == 0 {
		return Alert{}, errors.New("labels missing or empty")
	}
	if err := validatePairs(wa.Labels, lim.MaxLabels, lim.MaxNameBytes, lim.MaxLabelValueBytes); err != nil {
		return Alert{}, fmt.Errorf("labels%v", err)
	}
	if err := validatePairs(wa.Annotations, lim.MaxLabels, lim.MaxNameBytes, lim.MaxAnnotationValueBytes); err != nil {
		return Alert{}, fmt.Errorf("annotations%v", err)
	}
	if wa.Annotations == nil {
		wa.Annotations = map[string]string{}
	}
	return Alert(wa), nil
}

// validFingerprint reports whether s is how Alertmanager writes a fingerprint: a 64-bit hash
// of the labels as %016x (prometheus/common model.Fingerprint.String).
func validFingerprint(s string) bool {
	if len(s) != 16 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// validatePairs checks a label or annotation set. Names follow Prometheus's UTF-8 scheme (the
// default since Prometheus 3 and accepted by Alertmanager since 0.27): not empty, valid
// UTF-8; podcap also refuses control characters, since names are quoted into Events and
// logs. The legacy [a-zA-Z_][a-zA-Z0-9_]* is a subset, and refusing the rest would make
// Alertmanager drop whole notifications (a 4xx is not retried). Values may be any valid
// UTF-8 within the size bound, as in Prometheus. The error starts with "[name]" or ":".
func validatePairs(m map[string]string, maxPairs, maxName, maxValue int) error {
	if len(m) > maxPairs {
		return fmt.Errorf(": %d entries, at most %d", len(m), maxPairs)
	}
	for k, v := range m {
		switch {
		case k == "":
			return errors.New(": empty name")
		case len(k) > maxName:
			return fmt.Errorf("[%s]: name is %d bytes, at most %d", quote(k), len(k), maxName)
		case !utf8.ValidString(k) || hasControl(k):
			return fmt.Errorf("[%s]: name has invalid UTF-8 or a control character", quote(k))
		case len(v) > maxValue:
			return fmt.Errorf("[%s]: value is %d bytes, at most %d", quote(k), len(v), maxValue)
		case !utf8.ValidString(v):
			return fmt.Errorf("[%s]: value is not valid UTF-8", quote(k))
		}
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}

// quote quotes s for an error message, cut to 64 bytes so that an answer never echoes a
// large field back.
func quote(s string) string {
	const limit = 64
	if len(s) <= limit {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q…", s[:limit])
}
