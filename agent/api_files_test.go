package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/capturetest"
	"github.com/podcap/podcap/agent/metrics"
)

// noCaptures is a Retrieval without any capture.
type noCaptures struct{}

var _ Retrieval = noCaptures{}

func (noCaptures) Captures(string) []capture.Listing { return nil }
func (noCaptures) OpenFile(string, string, string) (*capture.CaptureFile, error) {
	return nil, capture.ErrFileNotFound
}
func (noCaptures) Subscribe(string, string) (*capture.Subscription, error) {
	return nil, capture.ErrCaptureNotRunning
}

// retrievalBed is a real capture manager over files in a temporary directory, its captures
// fake held sources, and the API server routing to it.
type retrievalBed struct {
	dir     string
	m       *capture.Manager
	engine  *capturetest.Engine
	res     *capturetest.Resolver
	streams *metrics.Streams
	srv     *Server
	reg     *prometheus.Registry // the API server's request counter
}

func newRetrievalBed(t *testing.T, sc capture.StreamConfig) *retrievalBed {
	t.Helper()
	b := &retrievalBed{dir: t.TempDir(), engine: capturetest.NewEngine(nil), res: capturetest.NewResolver(),
		streams: metrics.NewStreams(prometheus.NewRegistry())}
	sc.Metrics = b.streams
	m, err := capture.NewManager(capture.Config{
		Dir: b.dir, MaxConcurrent: 4, Engines: map[string]capture.Engine{capture.EngineTcpdump: b.engine},
		Resolver: b.res, Notifier: nopNotifier{}, Metrics: metrics.New(prometheus.NewRegistry()), Streams: sc,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	b.m = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	b.srv = handlerOnlyAPIServer(t)
	b.reg = prometheus.NewRegistry()
	b.srv.CountRequests(b.reg) // before the routes: they are counted
	newCtrl(t, Config{}).c.RegisterAPI(b.srv, testGuard(), m)
	return b
}

type nopNotifier struct{}

func (nopNotifier) Notify(capture.Spec, string, string, string) {}

// get serves a GET of target (a raw request URI, sent as is) with the token, following the
// mux's redirects (of paths it cleans) as a client would.
func (b *retrievalBed) get(t *testing.T, target string) *httptest.ResponseRecorder {
	t.Helper()
	for range 5 {
		req := httptest.NewRequest(http.MethodGet, target, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		b.srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusMovedPermanently && rec.Code != http.StatusTemporaryRedirect {
			return rec
		}
		target = rec.Header().Get("Location")
	}
	t.Fatalf("%s: too many redirects", target)
	return nil
}

// startCapture starts a manual capture of default/pod and returns its source once it runs.
func (b *retrievalBed) startCapture(t *testing.T, pod string) *capturetest.Source {
	t.Helper()
	b.res.Set("default", pod, capture.Target{PID: 42, SandboxID: "sb-" + pod})
	n := len(b.engine.Sources())
	spec := capture.Spec{Namespace: "default", Pod: pod, UID: "uid-" + pod, Files: 2, FileSize: capture.DefaultFileSize, Source: capture.SourceManual}
	if _, err := b.m.Ensure(spec); err != nil {
		t.Fatal(err)
	}
	poll(t, "capture running", func() bool {
		st, _ := b.m.Status("default", pod)
		return st.Phase == capture.PhaseRunning && len(b.engine.Sources()) > n
	})
	return b.engine.Sources()[n]
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func push(src *capturetest.Source, first, n, size int) {
	for i := first; i < first+n; i++ {
		data := bytes.Repeat([]byte{byte(i)}, size)
		src.Push(capturetest.NewPacket(gopacketCI(i), data))
	}
}

// writeFinished writes a finished policy capture of default/pod as an earlier capture left
// it: three ring files (newest index 0) and a capture.json. It returns the directory.
func writeFinished(t *testing.T, base, pod string) string {
	t.Helper()
	dir := filepath.Join(base, "default", pod, "policy-20261206T120000.000Z")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	meta := `{"namespace":"default","pod":"` + pod + `","source":"alert","reason":"r","files":3,"format":"pcapng",` +
		`"alerts":["fp1","fp2"],"started":"2026-12-06T12:00:00Z","stopped":"2026-12-06T12:05:00Z"}`
	mtime := time.Date(2026, 12, 6, 12, 1, 0, 0, time.UTC)
	for _, f := range [][2]string{{"capture.json", meta}, {"capture-" + pod + ".pcapng1", pod + " one"},
		{"capture-" + pod + ".pcapng2", pod + " two"}, {"capture-" + pod + ".pcapng0", pod + " zero"}} {
		p := filepath.Join(dir, f[0])
		if err := os.WriteFile(p, []byte(f[1]), 0o600); err != nil {
			t.Fatal(err)
		}
		mtime = mtime.Add(time.Second)
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const finishedID = "policy-20261206T120000.000Z"

func TestCapturesListShowsLiveAndFinished(t *testing.T) {
	b := newRetrievalBed(t, capture.StreamConfig{})
	writeFinished(t, b.dir, "web")
	push(b.startCapture(t, "web"), 0, 3, 100)
	poll(t, "3 packets", func() bool { st, _ := b.m.Status("default", "web"); return st.Packets == 3 })
	rec := b.get(t, "/api/v1/captures")
	var items []CaptureItem
	if err := json.Unmarshal(rec.Body.Bytes(), &items); err != nil || rec.Code != http.StatusOK || len(items) != 2 {
		t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
	}
	fin, live := items[0], items[1]
	var names []string
	for _, f := range fin.Files {
		names = append(names, f.Name)
	}
	if fin.ID != finishedID || fin.Source != "alert" || fin.State != "finished" || fin.Format != "pcapng" || len(fin.Alerts) != 2 ||
		fin.Capture != nil || strings.Join(names, " ") != finishedID+"_capture-web.pcapng1 "+finishedID+"_capture-web.pcapng2 "+finishedID+"_capture-web.pcapng0" {
		t.Errorf("finished capture %+v", fin)
	}
	if live.ID != "manual" || live.State != "running" || live.Packets != 3 || live.Bytes != 300 || live.Capture == nil ||
		live.Capture.Phase != "Running" || len(live.Files) != 1 || live.Files[0].Name != "capture-web.pcap0" {
		t.Errorf("live capture %+v", live)
	}
	if rec := b.get(t, "/api/v1/captures?namespace=other"); strings.TrimSpace(rec.Body.String()) != "[]" {
		t.Errorf("namespace other: %s", rec.Body)
	}
	// the visibility filter drops what the caller may not see
	hidden := httptest.NewRecorder()
	capturesHandler(b.m, func(_ context.Context, ns string) bool { return ns != "default" }).
		ServeHTTP(hidden, httptest.NewRequest(http.MethodGet, "/api/v1/captures", nil))
	if strings.TrimSpace(hidden.Body.String()) != "[]" {
		t.Errorf("hidden namespace listed: %s", hidden.Body)
	}
}

func TestFileDownload(t *testing.T) {
	b := newRetrievalBed(t, capture.StreamConfig{})
	dir := writeFinished(t, b.dir, "web")
	rec := b.get(t, "/api/v1/captures/default/web/files/"+finishedID+"_capture-web.pcapng2")
	want, _ := os.ReadFile(filepath.Join(dir, "capture-web.pcapng2"))
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), want) {
		t.Fatalf("%d %q, want %q", rec.Code, rec.Body, want)
	}
	if ct, cd := rec.Header().Get("Content-Type"), rec.Header().Get("Content-Disposition"); ct != ContentTypePcapng ||
		cd != `attachment; filename=`+finishedID+`_capture-web.pcapng2` {
		t.Errorf("Content-Type %q, Content-Disposition %q", ct, cd)
	}
	req := httptest.NewRequest(http.MethodGet, "/api/v1/captures/default/web/files/"+finishedID+"_capture-web.pcapng2", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Range", "bytes=4-")
	part := httptest.NewRecorder()
	b.srv.Handler().ServeHTTP(part, req)
	if part.Code != http.StatusPartialContent || part.Body.String() != string(want[4:]) {
		t.Errorf("range: %d %q", part.Code, part.Body)
	}
	// a running ring's current file: flushed, whole records
	push(b.startCapture(t, "db"), 0, 2, 100)
	poll(t, "2 packets", func() bool { st, _ := b.m.Status("default", "db"); return st.Packets == 2 })
	live := b.get(t, "/api/v1/captures/default/db/files/capture-db.pcap0")
	if live.Code != http.StatusOK || live.Body.Len() != 24+2*(16+100) || live.Header().Get("Content-Type") != ContentTypePcap {
		t.Errorf("live file: %d, %d bytes, %s", live.Code, live.Body.Len(), live.Header().Get("Content-Type"))
	}
}

// Path tricks get 404 and never read anything outside the capture's directory.
func TestFilePathTricks(t *testing.T) {
	b := newRetrievalBed(t, capture.StreamConfig{})
	dir := writeFinished(t, b.dir, "web")
	other := writeFinished(t, b.dir, "db")
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "default", "web", "top"), []byte("SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"capture-web.pcapng1": secret, "capture-web.pcapng2": filepath.Join(other, "capture-db.pcapng0")} {
		p := filepath.Join(dir, name)
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	const files = "/api/v1/captures/default/web/files/"
	for _, target := range []string{
		files + finishedID + "_capture-web.pcapng1", // symlink to a file outside
		files + finishedID + "_capture-web.pcapng2", // symlink to another capture's file
		files + finishedID + "_capture-db.pcapng0",  // another pod's capture's name
		files + "..",       // cleaned by the mux: no route
		files + "%2e%2e",   //
		files + "..%2Ftop", // an encoded slash
		files + "%2E%2E%2F%2E%2E%2Fdb%2F" + finishedID + "%2Fcapture-db.pcapng0",
		files + finishedID + "%2Fcapture-web.pcapng0", // the capture's directory
		files + finishedID + "_capture.json",          // not a capture file
		files + "capture.json",                        //
		"/api/v1/captures/default/..%2Fdefault%2Fdb/files/" + finishedID + "_capture-db.pcapng0",
		"/api/v1/captures/%2e%2e/web/files/top", //
		files + "%00",                           //
	} {
		rec := b.get(t, target)
		if rec.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404: %s", target, rec.Code, rec.Body)
		}
		if strings.Contains(rec.Body.String(), "SECRET") || strings.Contains(rec.Body.String(), "db zero") {
			t.Errorf("%s: served %q", target, rec.Body)
		}
	}
	if rec := b.get(t, files+finishedID+"_capture-web.pcapng0"); rec.Code != http.StatusOK || rec.Body.String() != "web zero" {
		t.Errorf("the capture's own file: %d %q", rec.Code, rec.Body)
	}
}

func readBody(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes of the stream: %v", n, err)
	}
	return b
}
