package agent

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/policy"
)

// Explanation is what GET /api/v1/decisions/{namespace}/{pod} returns: the policy input the
// agent builds for the pod now, the policy's result, and the pod's capture if one runs.
type Explanation struct {
	Namespace     string           `json:"namespace"`
	Pod           string           `json:"pod"`
	PolicyVersion string           `json:"policy_version,omitempty"`
	Input         *policy.Input    `json:"input,omitempty"`
	Decision      *policy.Decision `json:"decision,omitempty"`
	ManualAllowed *bool            `json:"manual_allowed,omitempty"`
	Error         string           `json:"error,omitempty"`
	Capture       *CaptureStatus   `json:"capture,omitempty"`
	// Recorder is the policy's flight recorder decision (data.podcap.recorder), or why it
	// could not be read; RecorderCapture the pod's running flight recorder.
	Recorder        *policy.Decision `json:"recorder,omitempty"`
	RecorderError   string           `json:"recorder_error,omitempty"`
	RecorderCapture *CaptureStatus   `json:"recorder_capture,omitempty"`
}

// CaptureStatus is a capture as the API shows it.
type CaptureStatus struct {
	Source      string    `json:"source"`
	Phase       string    `json:"phase"`
	Reason      string    `json:"reason,omitempty"`
	Files       int       `json:"files"`
	FileSize    int64     `json:"file_size_bytes"`
	Snaplen     int       `json:"snaplen,omitempty"`
	Filter      string    `json:"filter,omitempty"`
	Dir         string    `json:"dir"`
	PID         int       `json:"pid,omitempty"`
	Started     time.Time `json:"started,omitzero"`
	Packets     uint64    `json:"packets"`
	Bytes       uint64    `json:"bytes"`      // captured packet bytes
	DiskBytes   int64     `json:"disk_bytes"` // what the ring files hold now
	KernelDrops uint64    `json:"kernel_drops"`
	Restarts    int       `json:"restarts"`
	LastError   string    `json:"last_error,omitempty"`
	Format      string    `json:"format"`
	Engine      string    `json:"engine,omitempty"`
	// Alerts are the fingerprints of an alert capture's alerts; Trigger what started it, one
	// item each (the rule's reason; each alert's name, fingerprint and generatorURL).
	Alerts    []string `json:"alerts,omitempty"`
	Trigger   []string `json:"trigger,omitempty"`
	StopGrace string   `json:"stop_grace,omitempty"`
	Cooldown  string   `json:"cooldown,omitempty"`
	// StoppingAt is when a capture that is no longer decided stops, at the end of its stop
	// grace; absent otherwise.
	StoppingAt time.Time `json:"stopping_at,omitzero"`
}

func captureStatus(s capture.Status) *CaptureStatus {
	st := &CaptureStatus{
		Source: s.Spec.Source, Phase: string(s.Phase), Reason: s.Spec.Reason, Files: s.Spec.Files,
		FileSize: s.Spec.FileSize, Snaplen: s.Spec.Snaplen, Filter: s.Spec.Filter, Dir: s.Dir, PID: s.PID,
		Started: s.Started, Packets: s.Packets, Bytes: s.Bytes, DiskBytes: s.DiskBytes, KernelDrops: s.KernelDrops,
		Restarts: s.Restarts, LastError: s.LastError, Format: s.Spec.Format, StoppingAt: s.StopsAt, Engine: s.Spec.Engine,
	}
	if st.Format == "" {
		st.Format = capture.FormatPcap
	}
	if s.Spec.Alerts != "" {
		st.Alerts = strings.Split(s.Spec.Alerts, ",")
	}
	if s.Spec.Trigger != "" {
		st.Trigger = strings.Split(s.Spec.Trigger, "\n")
	}
	if s.Spec.StopGrace > 0 {
		st.StopGrace = s.Spec.StopGrace.String()
	}
	if s.Spec.Cooldown > 0 {
		st.Cooldown = s.Spec.Cooldown.String()
	}
	return st
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// MinAPITokenLen is the shortest static bearer token (--api-token-file) the API accepts, in
// bytes: a guessable token would expose pod metadata, policy internals and captured traffic
// to the node's network.
const MinAPITokenLen = 16

// RegisterAPI adds the agent's HTTP API to s, each route behind g:
// GET /api/v1/decisions/{namespace}/{pod}, .../captures/{namespace}/{pod}/files/{name} and
// .../stream (get pods/capture of the pod), and GET /api/v1/captures (the captures in the
// namespaces the caller may get pods/capture in).
func (c *Controller) RegisterAPI(s *Server, g *APIGuard, captures Retrieval) {
	s.Handle("GET /api/v1/decisions/{namespace}/{pod}", g.Pod(c.decisionsHandler()))
	s.Handle("GET /api/v1/captures", g.List(captureNamespaces(captures), capturesHandler(captures, ListVisible)))
	s.Handle("GET /api/v1/captures/{namespace}/{pod}/files/{name}", g.Pod(fileHandler(captures)))
	s.Handle("GET /api/v1/captures/{namespace}/{pod}/stream", g.Pod(streamHandler(captures)))
}

// captureNamespaces lists the namespaces of the captures, for APIGuard.List.
func captureNamespaces(captures Retrieval) func() []string {
	return func() []string {
		var out []string
		for _, l := range captures.Captures("") {
			out = append(out, l.Namespace)
		}
		return out
	}
}

// decisionsHandler serves GET /api/v1/decisions/{namespace}/{pod}.
func (c *Controller) decisionsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns, name := r.PathValue("namespace"), r.PathValue("pod")
		e, err := c.Explain(r.Context(), ns, name)
		if apierrors.IsNotFound(err) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "pod " + ns + "/" + name + " is not on this node"})
			return
		}
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, e)
	})
}
