package agent

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/capture"
)

// Retrieval is what the retrieval API (list, download, live stream) needs of the capture
// manager; *capture.Manager implements it.
type Retrieval interface {
	Captures(namespace string) []capture.Listing
	OpenFile(namespace, pod, name string) (*capture.CaptureFile, error)
	Subscribe(namespace, pod string) (*capture.Subscription, error)
}

var _ Retrieval = (*capture.Manager)(nil)

// Visible reports whether the caller of a request (its context: the authenticated user)
// may see the captures of namespace. The list shows only the visible namespaces.
type Visible func(ctx context.Context, namespace string) bool

// allNamespaces is the visibility of the static token's holder: everything.
func allNamespaces(context.Context, string) bool { return true }

// CaptureItem is one capture in GET /api/v1/captures.
type CaptureItem struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// ID names the capture among the pod's: manual, recorder, or its directory
	// (policy-20261206T231500.000Z); its files' names start with it (but a manual ring's).
	ID          string     `json:"id"`
	Source      string     `json:"source"`
	Reason      string     `json:"reason,omitempty"`
	Alerts      []string   `json:"alerts,omitempty"`
	State       string     `json:"state"`
	Started     time.Time  `json:"started,omitzero"`
	Stopped     time.Time  `json:"stopped,omitzero"`
	Packets     uint64     `json:"packets"`      // a finished capture's as counted when it stopped (0 if unknown)
	Bytes       uint64     `json:"bytes"`        // captured packet bytes; as packets
	KernelDrops uint64     `json:"kernel_drops"` // as packets
	Format      string     `json:"format"`
	Files       []FileItem `json:"files"` // in ring order, oldest first; pre-trigger files last
	// Capture is the full status of a capture the agent runs or remembers (as before the
	// retrieval API); absent for a finished capture found on disk.
	Capture *CaptureStatus `json:"capture,omitempty"`
}

// FileItem is one file of a capture: GET /api/v1/captures/{namespace}/{pod}/files/{name}.
type FileItem struct {
	Name     string    `json:"name"`
	Size     int64     `json:"size_bytes"`
	Modified time.Time `json:"modified"`
}

func captureItem(l capture.Listing) CaptureItem {
	it := CaptureItem{
		Namespace: l.Namespace, Pod: l.Pod, ID: l.ID, Source: l.Source, Reason: l.Reason, Alerts: l.Alerts, State: l.State,
		Started: l.Started, Stopped: l.Stopped, Format: l.Format, Files: []FileItem{},
	}
	for _, f := range l.Files {
		it.Files = append(it.Files, FileItem{Name: f.Name, Size: f.Size, Modified: f.Modified})
	}
	switch {
	case l.Live != nil:
		it.Packets, it.Bytes, it.KernelDrops = l.Live.Packets, l.Live.Bytes, l.Live.KernelDrops
		it.Capture = captureStatus(*l.Live)
	case l.Final != nil:
		it.Packets, it.Bytes, it.KernelDrops = l.Final.Packets, l.Final.Bytes, l.Final.KernelDrops
	}
	return it
}

// capturesHandler serves GET /api/v1/captures[?namespace=NS]: the captures the agent runs or
// keeps, in the namespaces visible to the caller.
func capturesHandler(captures Retrieval, visible Visible) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := []CaptureItem{}
		allowed := map[string]bool{} // one visibility check per namespace
		for _, l := range captures.Captures(r.URL.Query().Get("namespace")) {
			ok, seen := allowed[l.Namespace]
			if !seen {
				ok = visible(r.Context(), l.Namespace)
				allowed[l.Namespace] = ok
			}
			if ok {
				out = append(out, captureItem(l))
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// Content types of capture files.
const (
	ContentTypePcap   = "application/vnd.tcpdump.pcap"
	ContentTypePcapng = "application/x-pcapng"
)

// fileHandler serves GET /api/v1/captures/{namespace}/{pod}/files/{name}: one of the pod's
// capture files, as the list names it (capture.Manager.OpenFile looks the name up, it never
// becomes a path), with Range support; a file the ring is writing is served as it was when
// opened (flushed first).
func fileHandler(captures Retrieval) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns, pod, name := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("name")
		f, err := captures.OpenFile(ns, pod, name)
		if errors.Is(err, capture.ErrFileNotFound) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such capture file of pod " + ns + "/" + pod})
			return
		}
		if err != nil {
			klog.FromContext(r.Context()).Error(err, "Opening capture file", "pod", ns+"/"+pod)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "cannot open the capture file"})
			return
		}
		defer f.Close()
		ctype := ContentTypePcap
		if f.Format == capture.FormatPcapng {
			ctype = ContentTypePcapng
		}
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": f.Name}))
		w.Header().Set("X-Content-Type-Options", "nosniff")
		// a large file outlasts the server's WriteTimeout: each write extends it
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w)}
		http.ServeContent(dw, r, f.Name, f.Modified, io.NewSectionReader(f.File, 0, f.Size))
	})
}

// writeStall bounds how long one write of a download or a stream may block (a client that
// stops reading); each write extends the connection's write deadline by it, in place of the
// API server's WriteTimeout, which would end any long transfer.
const writeStall = 30 * time.Second

// deadlineWriter extends the connection's write deadline before each write.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
}

func (d *deadlineWriter) Write(b []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(writeStall)) // unsupported (a test recorder): the server's bound stays
	return d.ResponseWriter.Write(b)
}
