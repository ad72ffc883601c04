package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podcap/podcap/agent/capture"
)

func gopacketCI(i int) gopacket.CaptureInfo {
	return gopacket.CaptureInfo{Timestamp: time.Unix(int64(1000+i), 0)}
}

// serveAPI serves the bed's API on a real listener with the API server's timeouts scaled
// down to timeout, over HTTP/2 and TLS (what clients of the HTTPS API server negotiate) or
// plain HTTP/1.1, and returns its URL and client.
func serveAPI(t *testing.T, b *retrievalBed, timeout time.Duration, h2 bool) (string, *http.Client) {
	t.Helper()
	ts := httptest.NewUnstartedServer(b.srv.Handler())
	ts.Config.ReadTimeout, ts.Config.WriteTimeout, ts.Config.ReadHeaderTimeout = timeout, timeout, timeout
	ts.Config.MaxHeaderBytes = b.srv.httpServer().MaxHeaderBytes
	if h2 {
		ts.EnableHTTP2 = true
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(ts.Close)
	return ts.URL, ts.Client()
}

func openStream(t *testing.T, ctx context.Context, url string, client *http.Client) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/v1/captures/default/web/stream", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ContentTypePcap {
		t.Fatalf("stream: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	return resp
}

// A stream outlives the server's read and write timeouts, over HTTP/1.1 and HTTP/2, and is
// a pcap stream that gopacket reads: the capture's header, then the packets.
func TestStreamOutlivesServerTimeouts(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "http2"}[h2], func(t *testing.T) {
			b := newRetrievalBed(t, capture.StreamConfig{})
			src := b.startCapture(t, "web")
			const timeout = 200 * time.Millisecond
			url, client := serveAPI(t, b, timeout, h2)
			resp := openStream(t, context.Background(), url, client)
			if got := resp.ProtoMajor == 2; got != h2 {
				t.Fatalf("protocol %s", resp.Proto)
			}
			stream := readBody(t, resp.Body, 24)
			start, n := time.Now(), 0
			for time.Since(start) < 4*timeout { // packets paced across both timeouts
				push(src, n, 1, 100)
				stream = append(stream, readBody(t, resp.Body, 16+100)...)
				n++
				time.Sleep(timeout / 4) // pacing, not synchronisation: the test is about elapsed time
			}
			checkStream(t, stream, n)
		})
	}
}

func checkStream(t *testing.T, stream []byte, n int) {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		data, ci, err := r.ReadPacketData()
		if err != nil || len(data) != 100 || data[0] != byte(i) || ci.Timestamp.Unix() != int64(1000+i) {
			t.Fatalf("packet %d: %d bytes, %v, %v", i, len(data), ci.Timestamp, err)
		}
	}
	if r.LinkType() != 276 { // LINUX_SLL2, the fake engine's
		t.Errorf("link type %v", r.LinkType())
	}
}

// A reader that stops reading is cut off: its connection aborted and counted; the ring
// keeps every packet.
func TestStreamCutsReaderThatStopsReading(t *testing.T) {
	b := newRetrievalBed(t, capture.StreamConfig{BufferBytes: capture.MinStreamBufferBytes})
	src := b.startCapture(t, "web")
	url, client := serveAPI(t, b, 30*time.Second, false)
	resp := openStream(t, context.Background(), url, client)
	readBody(t, resp.Body, 24)
	pushed := 0
	poll(t, "the reader cut off", func() bool {
		push(src, pushed, 16, 60000) // ~1 MB a round: the socket buffers fill, then its buffer
		pushed += 16
		return testutil.ToFloat64(b.streams.Cut) == 1
	})
	poll(t, "every packet in the ring", func() bool { st, _ := b.m.Status("default", "web"); return st.Packets == uint64(pushed) })
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Error("the cut-off stream ended cleanly, want an aborted response")
	}
	poll(t, "no reader", func() bool { return testutil.ToFloat64(b.streams.Readers) == 0 })
	// the aborted stream is counted as what it answered
	if got := requests(t, b, "GET /api/v1/captures/{namespace}/{pod}/stream", "200"); got != 1 {
		t.Errorf("podcap_api_requests_total of the stream = %v, want 1", got)
	}
}

// requests is podcap_api_requests_total{route, code} of the bed's API server.
func requests(t *testing.T, b *retrievalBed, route, code string) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if mf.GetName() == "podcap_api_requests_total" && l["route"] == route && l["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// A client that leaves frees its place; the bounds answer 429 and 503; no capture is 404;
// the capture's end ends the response cleanly.
func TestStreamBoundsAndEnds(t *testing.T) {
	b := newRetrievalBed(t, capture.StreamConfig{MaxReaders: 2, MaxReadersPerCapture: 1})
	b.startCapture(t, "web")
	url, client := serveAPI(t, b, 30*time.Second, true)
	ctx, cancel := context.WithCancel(context.Background())
	openStream(t, ctx, url, client)
	poll(t, "one reader", func() bool { return testutil.ToFloat64(b.streams.Readers) == 1 })
	if rec := b.get(t, "/api/v1/captures/default/web/stream"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("second reader of the capture: %d", rec.Code)
	}
	cancel()
	poll(t, "the reader gone", func() bool { return testutil.ToFloat64(b.streams.Readers) == 0 })
	if rec := b.get(t, "/api/v1/captures/default/nope/stream"); rec.Code != http.StatusNotFound {
		t.Errorf("no capture: %d", rec.Code)
	}
	for code, want := range map[string]float64{"429": 1, "404": 1} {
		if got := requests(t, b, "GET /api/v1/captures/{namespace}/{pod}/stream", code); got != want {
			t.Errorf("podcap_api_requests_total of the stream, code %s = %v, want %v", code, got, want)
		}
	}
	if problems, err := testutil.GatherAndLint(b.reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
	b.startCapture(t, "db")
	resp := openStream(t, context.Background(), url, client)
	dbReq, _ := http.NewRequest(http.MethodGet, url+"/api/v1/captures/default/db/stream", nil)
	dbReq.Header.Set("Authorization", "Bearer "+testToken)
	dbResp, err := client.Do(dbReq)
	if err != nil {
		t.Fatal(err)
	}
	defer dbResp.Body.Close()
	b.startCapture(t, "api")
	if rec := b.get(t, "/api/v1/captures/default/api/stream"); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("third reader of the node: %d", rec.Code)
	}
	b.m.Stop("default", "web")
	if _, err := io.Copy(io.Discard, resp.Body); err != nil && !errors.Is(err, io.EOF) {
		t.Errorf("stream after the capture ended: %v, want a clean end", err)
	}
}
