package plugin

import (
	"time"
)

// Capture is one capture as the agent's GET /api/v1/captures lists it, plus the node of the
// agent that answered.
type Capture struct {
	Namespace   string    `json:"namespace"`
	Pod         string    `json:"pod"`
	ID          string    `json:"id,omitempty"` // among the pod's captures: manual, recorder, policy-<time>, ...
	Node        string    `json:"node,omitempty"`
	Source      string    `json:"source,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Alerts      []string  `json:"alerts,omitempty"`
	State       string    `json:"state,omitempty"`
	Started     time.Time `json:"started,omitzero"`
	Stopped     time.Time `json:"stopped,omitzero"`
	Packets     uint64    `json:"packets"`
	Bytes       uint64    `json:"bytes"`
	KernelDrops uint64    `json:"kernel_drops"`
	Format      string    `json:"format,omitempty"`
	Filter      string    `json:"filter,omitempty"`
	Files       []File    `json:"files"`
	// RingFiles is the ring's size when the agent does not list the files themselves (an
	// agent older than the retrieval API); not printed.
	RingFiles int `json:"-"`
}

// File is one file of a capture's ring.
type File struct {
	Name      string    `json:"name"`
	SizeBytes int64     `json:"size_bytes"`
	Modified  time.Time `json:"modified,omitzero"`
}

// wireCapture decodes both shapes agents answer with: the retrieval API's flat item (issue 9)
// and the older {namespace, pod, capture: {...}} of agents before it; the flat fields win.
type wireCapture struct {
	Capture
	Legacy *legacyStatus `json:"capture,omitempty"`
}

// legacyStatus is the part of the older agents' per-capture status the plugin shows.
type legacyStatus struct {
	Source      string    `json:"source"`
	Phase       string    `json:"phase"`
	Reason      string    `json:"reason"`
	Files       int       `json:"files"`
	Filter      string    `json:"filter"`
	Started     time.Time `json:"started"`
	Packets     uint64    `json:"packets"`
	Bytes       uint64    `json:"bytes"`
	KernelDrops uint64    `json:"kernel_drops"`
	Format      string    `json:"format"`
	Alerts      []string  `json:"alerts"`
}

// capture merges the two shapes into one Capture.
func (w wireCapture) capture() Capture {
	c := w.Capture
	l := w.Legacy
	if l == nil {
		return c
	}
	c.Source = or(c.Source, l.Source)
	c.State = or(c.State, l.Phase)
	c.Reason = or(c.Reason, l.Reason)
	c.Filter = or(c.Filter, l.Filter)
	c.Format = or(c.Format, l.Format)
	if c.Started.IsZero() {
		c.Started = l.Started
	}
	if c.Packets == 0 && c.Bytes == 0 && c.KernelDrops == 0 {
		c.Packets, c.Bytes, c.KernelDrops = l.Packets, l.Bytes, l.KernelDrops
	}
	if len(c.Alerts) == 0 {
		c.Alerts = l.Alerts
	}
	c.RingFiles = l.Files
	return c
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Explanation is the part of GET /api/v1/decisions/{namespace}/{pod} the human summary of
// `explain` shows; -o json|yaml print the agent's whole answer instead.
type Explanation struct {
	Namespace     string         `json:"namespace"`
	Pod           string         `json:"pod"`
	PolicyVersion string         `json:"policy_version"`
	Decision      *Decision      `json:"decision"`
	ManualAllowed *bool          `json:"manual_allowed"`
	Error         string         `json:"error"`
	Capture       *CaptureStatus `json:"capture"`
	Input         *struct {
		Manual struct {
			Requested bool   `json:"requested"`
			Files     int    `json:"files"`
			Error     string `json:"error"`
		} `json:"manual"`
	} `json:"input"`
	Recorder        *Decision      `json:"recorder"`
	RecorderError   string         `json:"recorder_error"`
	RecorderCapture *CaptureStatus `json:"recorder_capture"`
}

// Decision is a policy decision as the agent reports it.
type Decision struct {
	Capture       bool   `json:"capture"`
	Reason        string `json:"reason"`
	Files         int    `json:"files"`
	FileSizeBytes int64  `json:"file_size_bytes"`
	Snaplen       int    `json:"snaplen"`
	Filter        string `json:"filter"`
	MaxDuration   string `json:"max_duration"`
	Format        string `json:"format"`
	Engine        string `json:"engine"`
}

// CaptureStatus is a running capture as the decisions endpoint shows it.
type CaptureStatus struct {
	Source      string    `json:"source"`
	Phase       string    `json:"phase"`
	Reason      string    `json:"reason"`
	Files       int       `json:"files"`
	FileSize    int64     `json:"file_size_bytes"`
	Snaplen     int       `json:"snaplen"`
	Filter      string    `json:"filter"`
	Started     time.Time `json:"started"`
	Packets     uint64    `json:"packets"`
	Bytes       uint64    `json:"bytes"`
	KernelDrops uint64    `json:"kernel_drops"`
	Format      string    `json:"format"`
	Engine      string    `json:"engine"`
	LastError   string    `json:"last_error"`
}
