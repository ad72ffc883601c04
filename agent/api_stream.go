package agent

import (
	"errors"
	"net/http"
	"time"

	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/capture"
)

// streamHandler serves GET /api/v1/captures/{namespace}/{pod}/stream: the pod's running
// capture as a live pcap stream (a pcap file header, then the packets from now on), for
// `wireshark -k -i -`. The response ends with the capture. A reader that falls behind its
// buffer is cut off: the connection is aborted (capture.ErrStreamTooSlow, counted in
// podcap_stream_readers_cut_total); the capture never waits for it. A client that goes away ends its subscription. Too many readers of the
// capture: 429; of the node: 503.
func streamHandler(captures Retrieval) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns, pod := r.PathValue("namespace"), r.PathValue("pod")
		sub, err := captures.Subscribe(ns, pod)
		if err != nil {
			streamRefused(w, r, ns+"/"+pod, err)
			return
		}
		defer sub.Close()
		log := klog.FromContext(r.Context()).WithValues("pod", ns+"/"+pod)
		rc := http.NewResponseController(w)
		// the stream lasts as long as the capture: no read deadline (the request was read;
		// HTTP/1.1 clears it itself, HTTP/2 would end the stream's body), and a write
		// deadline extended before each write (deadlineWriter): the server's WriteTimeout
		// would end the stream (HTTP/2: reset it) 30 s in
		_ = rc.SetReadDeadline(time.Time{})
		dw := &deadlineWriter{ResponseWriter: w, rc: rc}
		w.Header().Set("Content-Type", ContentTypePcap)
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			return
		}
		log.V(2).Info("Live stream started")
		for {
			b, err := sub.Next(r.Context())
			if errors.Is(err, capture.ErrStreamEnded) {
				log.V(2).Info("Live stream ended", "reason", err)
				return // the response ends cleanly with the capture
			}
			if err != nil {
				// cut off (too slow, or the capture's format changed), or the client left:
				// the connection is aborted, so that a client sees a truncated stream, not
				// the end of the capture
				log.V(2).Info("Live stream aborted", "reason", err)
				panic(http.ErrAbortHandler)
			}
			if _, err := dw.Write(b); err != nil {
				log.V(2).Info("Live stream ended", "reason", err)
				return
			}
			if sub.Buffered() == 0 { // one flush per burst, not per packet
				if err := rc.Flush(); err != nil {
					return
				}
			}
		}
	})
}

// StreamHandler is streamHandler, the handler of the live-stream route, without the
// authentication and authorisation RegisterAPI puts before it: for programs that serve a
// capture's stream as the agent does (test/bench/cmd/pipeline measures what readers cost a
// capture with it). The route's pattern must name {namespace} and {pod}. The agent does not
// use it.
func StreamHandler(captures Retrieval) http.Handler { return streamHandler(captures) }

// streamRefused answers a stream that could not start.
func streamRefused(w http.ResponseWriter, r *http.Request, pod string, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, capture.ErrCaptureNotRunning), errors.Is(err, capture.ErrStreamEnded):
		code = http.StatusNotFound
	case errors.Is(err, capture.ErrCaptureStreams):
		code = http.StatusTooManyRequests
	case errors.Is(err, capture.ErrNodeStreams):
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "10")
	default:
		klog.FromContext(r.Context()).Error(err, "Starting a live stream", "pod", pod)
	}
	writeJSON(w, code, map[string]string{"error": "live stream of pod " + pod + ": " + err.Error()})
}
