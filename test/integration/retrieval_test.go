package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	corev1 "k8s.io/api/core/v1"

	"github.com/podcap/podcap/agent"
	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/test/testbed"
)

// retrievalAPI is a client of an agent's retrieval API with its static token.
type retrievalAPI struct {
	t      *testing.T
	a      *testbed.AgentProcess
	client *http.Client
	token  string
}

func (r retrievalAPI) get(ctx context.Context, path string) *http.Response {
	r.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.a.APIURL(path), nil)
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatalf("GET %s: %v", path, err)
	}
	return resp
}

// body GETs path and returns the status and the whole body.
func (r retrievalAPI) body(path string) (int, []byte) {
	r.t.Helper()
	resp := r.get(r.t.Context(), path)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, b
}

// capture returns the pod's manual capture as the list shows it.
func (r retrievalAPI) capture(pod *corev1.Pod) agent.CaptureItem {
	r.t.Helper()
	code, b := r.body("/api/v1/captures?namespace=" + pod.Namespace)
	var items []agent.CaptureItem
	if err := json.Unmarshal(b, &items); err != nil || code != http.StatusOK {
		r.t.Fatalf("list: %d %s: %v", code, b, err)
	}
	for _, it := range items {
		if it.Pod == pod.Name && it.ID == capture.IDManual {
			return it
		}
	}
	r.t.Fatalf("no manual capture of %s in %s", pod.Name, b)
	return agent.CaptureItem{}
}

// TestRetrievalAPI lists, downloads and live-streams a real manual capture through the
// agent's HTTPS API: a download equals the file on disk, `tcpdump -r -` reads the stream
// while the capture runs, a reader that stops reading is cut off while the ring keeps every
// packet, and names that are not the capture's own files (a symlink planted in the capture
// directory, paths) get 404.
func TestRetrievalAPI(t *testing.T) {
	c := testBed(t)
	token := "t0k3n-" + t.Name()
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, token+"\n")
	a := startAgent(t, c, "--api-token-file="+tokenFile, fmt.Sprintf("--stream-buffer-bytes=%d", capture.MinStreamBufferBytes))
	api := retrievalAPI{t: t, a: a, client: apiClient(t, a), token: token}
	pod := runningPod(t, c, "retrieval", "web", testbed.PodOptions{})
	annotate(t, c, pod, "40") // 40 MB: the bursts below never wrap it
	first := waitPackets(t, a, pod, "capture-web.pcap00")
	waitPodIP(t, first, pod.Status.PodIP)

	it := api.capture(pod)
	if it.Source != "manual" || it.State != "running" || it.Format != "pcap" || len(it.Files) != 1 || it.Files[0].Name != "capture-web.pcap00" {
		t.Fatalf("listed %+v", it)
	}
	t.Run("stream read by tcpdump", func(t *testing.T) { streamToTcpdump(t, api, pod) })
	t.Run("reader that stops reading is cut off", func(t *testing.T) { cutSlowReader(t, c, api, pod) })
	t.Run("download equals the file on disk", func(t *testing.T) { downloadFiles(t, api, pod) })
	t.Run("symlinks and paths get 404", func(t *testing.T) { pathTricks(t, api, pod) })
}

// streamToTcpdump pipes the live stream into `tcpdump -r -` while the pod pings.
func streamToTcpdump(t *testing.T, api retrievalAPI, pod *corev1.Pod) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resp := api.get(ctx, "/api/v1/captures/"+pod.Namespace+"/"+pod.Name+"/stream")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != agent.ContentTypePcap {
		t.Fatalf("stream: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	waitFor(t, 10*time.Second, "one stream reader", func() (bool, error) { return metric(t, api.a, "podcap_stream_readers") == 1, nil })
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Fatal(err)
	}
	// the pod pings the bridge every 0.2 s: 10 packets within seconds
	cmd := exec.CommandContext(ctx, tcpdump, "-r", "-", "-nn", "-c", "10")
	cmd.Stdin = resp.Body
	cmd.WaitDelay = 5 * time.Second // the stdin copy ends at the next packet after tcpdump exits
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	timer := time.AfterFunc(30*time.Second, cancel)
	defer timer.Stop()
	if err := cmd.Run(); err != nil && !strings.Contains(err.Error(), "WaitDelay") {
		t.Fatalf("tcpdump -r -: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 10 || !strings.Contains(stderr.String(), "LINUX_SLL2") {
		t.Fatalf("tcpdump read %d packets, want 10:\n%s\n%s", len(lines), out.String(), stderr.String())
	}
	if !strings.Contains(out.String(), pod.Status.PodIP) {
		t.Errorf("no packet of the pod's %s in the stream:\n%s", pod.Status.PodIP, out.String())
	}
	cancel()
	waitFor(t, 10*time.Second, "the reader gone", func() (bool, error) { return metric(t, api.a, "podcap_stream_readers") == 0, nil })
}

// cutSlowReader opens a stream, never reads it, and pushes bulk traffic until the agent cuts
// the reader off; then every packet the capture counted is in the ring's files.
func cutSlowReader(t *testing.T, c *testbed.Cluster, api retrievalAPI, pod *corev1.Pod) {
	resp := api.get(t.Context(), "/api/v1/captures/"+pod.Namespace+"/"+pod.Name+"/stream")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %s", resp.Status)
	}
	cut := metric(t, api.a, "podcap_stream_readers_cut_total")
	for i := 0; metric(t, api.a, "podcap_stream_readers_cut_total") == cut; i++ {
		if i == 25 { // 25 MB: well over the socket buffers, HTTP/2's 4 MiB window and the reader's 512 KiB
			t.Fatal("the reader that stops reading was not cut off")
		}
		if out, err := c.Kubectl(t.Context(), "exec", "-n", pod.Namespace, pod.Name, "--", "traffic", "push", "100000", "10"); err != nil {
			t.Fatalf("push: %v\n%s", err, out)
		}
	}
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Error("the cut-off stream ended cleanly, want an aborted response")
	}
	dir := podDir(api.a, pod)
	waitRingSettled(t, dir, ringFiles(dir))
	// the ring holds every packet the capture counted: nothing was lost to the slow reader
	// (the pod's pings go on: the count is taken between two readings of the files)
	var inFiles int
	var it agent.CaptureItem
	waitFor(t, 30*time.Second, "the ring's files to hold what the capture counted", func() (bool, error) {
		before := ringPackets(t, dir, api.capture(pod).Files)
		it = api.capture(pod)
		inFiles = ringPackets(t, dir, it.Files)
		return it.Packets > 0 && uint64(before) <= it.Packets && it.Packets <= uint64(inFiles), nil
	})
	t.Logf("ring: %d packets in %d files, kernel drops %d", inFiles, len(it.Files), it.KernelDrops)
}

// downloadFiles downloads a completed file (byte for byte the file on disk) and the file
// being written (what the file held when it was opened: a prefix of the file on disk).
func downloadFiles(t *testing.T, api retrievalAPI, pod *corev1.Pod) {
	it := api.capture(pod)
	if len(it.Files) < 2 {
		t.Fatalf("want a rotated file: %+v", it.Files)
	}
	dir := podDir(api.a, pod)
	done, current := it.Files[0].Name, it.Files[len(it.Files)-1].Name
	code, got := api.body("/api/v1/captures/" + pod.Namespace + "/" + pod.Name + "/files/" + done)
	want, err := os.ReadFile(filepath.Join(dir, done))
	if err != nil || code != http.StatusOK || !bytes.Equal(got, want) {
		t.Errorf("%s: %d, %d bytes, want the %d bytes on disk (%v)", done, code, len(got), len(want), err)
	}
	code, got = api.body("/api/v1/captures/" + pod.Namespace + "/" + pod.Name + "/files/" + current)
	now, err := os.ReadFile(filepath.Join(dir, current))
	if err != nil || code != http.StatusOK || len(got) < 24 || !bytes.HasPrefix(now, got) {
		t.Errorf("%s: %d, %d bytes, not a prefix of the %d bytes on disk (%v)", current, code, len(got), len(now), err)
	}
	if s := readPcap(t, filepath.Join(dir, done)); s.packets == 0 || s.linkType != layers.LinkTypeLinuxSLL2 {
		t.Errorf("%s: %d packets, link type %v", done, s.packets, s.linkType)
	}
}

// ringPackets counts the packets in a capture's files.
func ringPackets(t *testing.T, dir string, files []agent.FileItem) (n int) {
	t.Helper()
	for _, f := range files {
		n += readPcap(t, filepath.Join(dir, f.Name)).packets
	}
	return n
}

// pathTricks plants symlinks in the real capture directory and asks for them and for paths.
func pathTricks(t *testing.T, api retrievalAPI, pod *corev1.Pod) {
	dir := podDir(api.a, pod)
	secret := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secret, "SECRET")
	for _, name := range []string{"capture-web.pcap19", "evil"} {
		if err := os.Symlink(secret, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(filepath.Join(dir, name)) })
	}
	files := "/api/v1/captures/" + pod.Namespace + "/" + pod.Name + "/files/"
	for _, name := range []string{"capture-web.pcap19", "evil", "..%2F..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", "%2Fetc%2Fpasswd"} {
		code, b := api.body(files + name)
		if code != http.StatusNotFound || bytes.Contains(b, []byte("SECRET")) || bytes.Contains(b, []byte("root:")) {
			t.Errorf("%s: %d %q, want 404", name, code, b)
		}
	}
	for _, f := range api.capture(pod).Files {
		if f.Name == "capture-web.pcap19" || f.Name == "evil" {
			t.Errorf("a planted symlink is listed: %s", f.Name)
		}
	}
}

// TestRetrievalFinishedPolicyCapture: a policy capture that stopped keeps its files; the
// list shows it finished, with its files, and a download equals the file on disk.
func TestRetrievalFinishedPolicyCapture(t *testing.T) {
	c := testBed(t)
	a, token := startPolicyAgent(t, c, policyDir(t, c, nil))
	api := retrievalAPI{t: t, a: a, client: apiClient(t, a), token: token}
	pod := runningPod(t, c, "retrieval-policy", "web", testbed.PodOptions{Labels: map[string]string{"podcap.io/capture": "true"}})
	dir := policySession(t, a, pod)
	waitPodIP(t, filepath.Join(dir, "capture-web.pcap0"), pod.Status.PodIP)
	setLabel(t, c, pod, "podcap.io/capture", nil)
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStopped", "no longer decided")

	id := filepath.Base(dir)
	var it agent.CaptureItem
	waitFor(t, 30*time.Second, "the capture listed as finished", func() (bool, error) {
		code, b := api.body("/api/v1/captures?namespace=" + pod.Namespace)
		var items []agent.CaptureItem
		if err := json.Unmarshal(b, &items); err != nil || code != http.StatusOK {
			return false, fmt.Errorf("list: %d %s: %v", code, b, err)
		}
		for _, x := range items {
			if x.ID == id {
				it = x
			}
		}
		return it.State == "finished", nil
	})
	if it.Source != "policy" || it.Reason != "label podcap.io/capture=true" || it.Stopped.IsZero() || len(it.Files) == 0 ||
		it.Files[0].Name != id+"_capture-web.pcap0" {
		t.Fatalf("listed %+v", it)
	}
	code, got := api.body("/api/v1/captures/" + pod.Namespace + "/" + pod.Name + "/files/" + it.Files[0].Name)
	want, err := os.ReadFile(filepath.Join(dir, "capture-web.pcap0"))
	if err != nil || code != http.StatusOK || !bytes.Equal(got, want) || len(want) <= 24 {
		t.Errorf("download: %d, %d bytes, want the %d bytes on disk (%v)", code, len(got), len(want), err)
	}
	if code, _ := api.body("/api/v1/captures/" + pod.Namespace + "/" + pod.Name + "/stream"); code != http.StatusNotFound {
		t.Errorf("stream of a finished capture: %d, want 404", code)
	}
}
