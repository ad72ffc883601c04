package agent

import (
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/policy"
)

// maxTriggerField bounds one label or URL quoted in a trigger line.
const maxTriggerField = 512

// alertTrigger resolves a decision's alert fingerprints against the alerts it was computed
// from (input.alerts): the sorted fingerprints without repeats (at most capture.MaxAlerts,
// comma-separated, for Spec.Alerts), and the trigger of the capture for Spec.Trigger: the
// rule's reason, then for each alert its alertname, fingerprint and generatorURL, one a line,
// at most capture.MaxTriggerLen bytes (a last line says how many alerts it left out).
//
// A fingerprint that is not among the alerts is an invalid decision (refused, not kept with
// an "unknown alert" line): input.alerts holds only active alerts, so the capture would be
// labelled with an alert that is not firing, or that never existed.
func alertTrigger(d policy.Decision, alerts []policy.Alert) (fingerprints, trigger string, err error) {
	byFP := make(map[string]policy.Alert, len(alerts))
	for _, a := range alerts {
		byFP[a.Fingerprint] = a
	}
	fps := slices.Compact(slices.Sorted(slices.Values(d.AlertFingerprints)))
	var unknown []string
	for _, fp := range fps {
		if _, ok := byFP[fp]; !ok {
			unknown = append(unknown, fmt.Sprintf("%q", cleanFP(fp)))
		}
	}
	if len(unknown) > 0 {
		return "", "", fmt.Errorf("alert_fingerprints: %s not the fingerprint of an active alert (input.alerts)", strings.Join(unknown, ", ")+is(len(unknown)))
	}
	lines := []string{"reason: " + d.Reason}
	size := len(lines[0])
	const moreReserve = 48 // the last line, "... and N more alerts"
	for i, fp := range fps {
		a := byFP[fp]
		line := fmt.Sprintf("alert: %s fingerprint=%s", clean(a.Labels["alertname"], maxTriggerField), cleanFP(fp))
		if a.GeneratorURL != "" {
			line += " generatorURL=" + clean(a.GeneratorURL, maxTriggerField)
		}
		if i >= capture.MaxAlerts || size+1+len(line)+1+moreReserve > capture.MaxTriggerLen {
			lines = append(lines, fmt.Sprintf("... and %d more alerts", len(fps)-i))
			break
		}
		lines = append(lines, line)
		size += 1 + len(line)
	}
	if len(fps) > capture.MaxAlerts {
		fps = fps[:capture.MaxAlerts]
	}
	for i, fp := range fps {
		fps[i] = cleanFP(fp)
	}
	return strings.Join(fps, ","), strings.Join(lines, "\n"), nil
}

// decisionSource is the capture source of a decision whose alerts are fingerprints.
func decisionSource(fingerprints string) string {
	if fingerprints != "" {
		return capture.SourceAlert
	}
	return capture.SourcePolicy
}

// DecisionTrigger is how the agent labels the capture of a valid capturing decision: its
// source (capture.SourceAlert or SourcePolicy) and trigger lines (Spec.Trigger), for
// `podcap-agent policy eval`. Both are empty for a decision that does not capture or names
// alerts that are not among alerts.
func DecisionTrigger(d policy.Decision, alerts []policy.Alert) (source string, trigger []string) {
	fps, t, err := alertTrigger(d, alerts)
	if !d.Capture || err != nil {
		return "", nil
	}
	return decisionSource(fps), strings.Split(t, "\n")
}

func is(n int) string {
	if n == 1 {
		return " is"
	}
	return " are"
}

// clean makes s one printable line of at most max bytes: control and format characters
// (newlines too: a trigger is one item a line) become '?'.
func clean(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) > max {
		cut := max - 3
		for cut > 0 && !utf8RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// cleanFP is a fingerprint as Spec.Alerts lists it (comma-separated): Alertmanager's are 16
// hex digits, anything else is shown but cannot split the list.
func cleanFP(fp string) string { return strings.ReplaceAll(clean(fp, 64), ",", "?") }

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
