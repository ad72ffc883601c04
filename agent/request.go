package agent

import (
	"fmt"
	"regexp"
	"strconv"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/metrics"
)

// DefaultAnnotationKey is the original tool's annotation: `tcpdump.antrea.io: "N"`.
const DefaultAnnotationKey = "tcpdump.antrea.io"

// ReasonInvalidRequest is the Event reason of a capture request the agent refuses.
const ReasonInvalidRequest = "InvalidCaptureRequest"

// invalidRequest is a capture request that can never succeed as written: reported once with
// a Warning Event and a metric, never retried.
type invalidRequest struct {
	reason      string // metric label: metrics.Invalid* or metrics.PolicyError*
	eventReason string // "" means ReasonInvalidRequest
	message     string
}

const hostNetworkRefusal = "the pod uses the host's network namespace: a capture would record the whole node's traffic; " +
	"the agent refuses such captures unless started with --allow-host-network"

var ringSize = regexp.MustCompile(`^[0-9]{1,9}$`)

// parseRingSize reads the annotation's value: a decimal number of files from 1 to maxFiles.
func parseRingSize(key, value string, maxFiles int) (int, *invalidRequest) {
	n := 0
	if ringSize.MatchString(value) {
		n, _ = strconv.Atoi(value) // at most 9 digits: no overflow
	}
	if n < 1 || n > maxFiles {
		return 0, &invalidRequest{
			reason: metrics.InvalidValue,
			message: fmt.Sprintf("annotation %s=%s is not a valid capture request: want the number of 1 MB files of the capture ring, a decimal integer from 1 to %d",
				key, quoteShort(value), maxFiles),
		}
	}
	return n, nil
}

// maxQuoted bounds the bytes of a pod-controlled value quoted in a message: an annotation
// value may be 256 KiB, and the message lands in an Event, the log and the API.
const maxQuoted = 64

// quoteShort quotes a pod-controlled value for messages: whole if short, else its first
// maxQuoted bytes (cut at a character boundary), "..." and its length.
func quoteShort(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// desiredCapture is the seed rule: the capture a pod asks for by annotation, nil for none.
func (c *Controller) desiredCapture(pod *corev1.Pod) (*capture.Spec, *invalidRequest) {
	value, ok := pod.Annotations[c.cfg.AnnotationKey]
	if !ok || pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning {
		return nil, nil
	}
	n, bad := parseRingSize(c.cfg.AnnotationKey, value, c.cfg.MaxFiles)
	if bad != nil {
		return nil, bad
	}
	if pod.Spec.HostNetwork && !c.cfg.AllowHostNetwork {
		return nil, &invalidRequest{reason: metrics.InvalidHostNetwork, message: hostNetworkRefusal}
	}
	if err := capture.ValidatePathName(pod.Namespace); err != nil {
		return nil, &invalidRequest{reason: metrics.InvalidName, message: err.Error()}
	}
	if err := capture.ValidatePathName(pod.Name); err != nil {
		return nil, &invalidRequest{reason: metrics.InvalidName, message: err.Error()}
	}
	return &capture.Spec{
		Namespace:   pod.Namespace,
		Pod:         pod.Name,
		UID:         string(pod.UID),
		Files:       n,
		FileSize:    capture.DefaultFileSize,
		Source:      capture.SourceManual,
		HostNetwork: pod.Spec.HostNetwork,
		Engine:      c.cfg.Engines.defaultEngine(),
	}, nil
}
