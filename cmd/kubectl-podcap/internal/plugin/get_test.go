package plugin

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

// getEnv: pod shop/web on node n2, its capture of three files there (ring order pcap1, pcap2,
// pcap0: the ring wrapped), a pod on n1 to make sure the right agent is asked.
func getEnv(t *testing.T) *testEnv {
	te := newTestEnv(t, []string{"n1", "n2"}, workloadPod("shop", "web", "n2"), workloadPod("shop", "db", "n1"))
	times := map[byte]time.Duration{0: 0, 1: time.Second, 2: 2 * time.Second, 3: 3 * time.Second}
	a := te.agents["n2"]
	a.captures = []any{capItem("shop", "web", "manual", "running", "capture-web.pcap1", "capture-web.pcap2", "capture-web.pcap0")}
	a.files["shop/web/capture-web.pcap1"] = pcapFile(t, layers.LinkTypeLinuxSLL2, false, times, 0)
	a.files["shop/web/capture-web.pcap2"] = pcapFile(t, layers.LinkTypeLinuxSLL2, false, times, 1, 2)
	a.files["shop/web/capture-web.pcap0"] = pcapFile(t, layers.LinkTypeLinuxSLL2, false, times, 3)
	return te
}

func TestGetFiles(t *testing.T) {
	te := getEnv(t)
	dir := t.TempDir()
	if err := te.run(t, "get", "web", "-o", dir); err != nil {
		t.Fatal(err)
	}
	want := []string{"capture-web.pcap1", "capture-web.pcap2", "capture-web.pcap0"}
	var wantOut string
	for _, n := range want {
		wantOut += filepath.Join(dir, n) + "\n"
		got, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || !bytes.Equal(got, te.agents["n2"].files["shop/web/"+n]) {
			t.Errorf("%s: %v, content differs from the agent's", n, err)
		}
	}
	if te.out.String() != wantOut {
		t.Errorf("output %q, want %q (ring order)", te.out, wantOut)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 3 {
		t.Errorf("dir holds %d entries, want the 3 files and no temporary file", len(ents))
	}
	reqs := te.agents["n2"].requests
	if len(reqs) != 4 || reqs[0] != "/api/v1/captures?namespace=shop" || reqs[1] != "/api/v1/captures/shop/web/files/capture-web.pcap1" {
		t.Errorf("requests %v", reqs)
	}
	if len(te.agents["n1"].requests) != 0 {
		t.Errorf("the agent of the other node was asked: %v", te.agents["n1"].requests)
	}
}

func TestGetMerge(t *testing.T) {
	te := getEnv(t)
	dir := t.TempDir()
	if err := te.run(t, "get", "web", "--merge", "-o", dir); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "web.pcap")
	if te.out.String() != out+"\n" {
		t.Errorf("output %q", te.out)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if link, ids := readIDs(t, b); link != layers.LinkTypeLinuxSLL2 || string(ids) != "\x00\x01\x02\x03" {
		t.Errorf("merged: link %v, packets %v", link, ids)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("dir holds %d entries, want only web.pcap", len(ents))
	}
}

func TestGetErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		setup func(*testEnv)
		args  []string
		want  string
	}{
		"no such pod":              {nil, []string{"get", "nope"}, "pod shop/nope not found"},
		"pod in another namespace": {nil, []string{"get", "web", "-n", "shop2"}, "pod shop2/web not found"},
		"pod without capture": {func(te *testEnv) { te.agents["n2"].captures = nil }, []string{"get", "web"},
			"no capture of pod shop/web on node n2"},
		"forbidden": {func(te *testEnv) { te.agents["n2"].forbidden["shop"] = true }, []string{"get", "web"},
			"you may not read captures in namespace shop: ask for get pods/capture"},
		"path in a name": {func(te *testEnv) {
			te.agents["n2"].captures = []any{capItem("shop", "web", "manual", "running", "../../etc/passwd")}
		}, []string{"get", "web"}, `names a capture file "../../etc/passwd": not a plain file name`},
		"old agent": {func(te *testEnv) {
			te.agents["n2"].captures = []any{map[string]any{"namespace": "shop", "pod": "web", "capture": map[string]any{"files": 3}}}
		}, []string{"get", "web"}, "does not list capture files (it predates the retrieval API)"},
		"pcapng merge": {func(te *testEnv) {
			c := capItem("shop", "web", "alert", "running", "a.pcapng0")
			c["format"] = "pcapng"
			te.agents["n2"].captures = []any{c}
		}, []string{"get", "web", "--merge"}, "pcapng files are not merged"},
		"no agent on the node": {func(te *testEnv) {
			_ = te.kube.CoreV1().Pods(DefaultAgentNamespace).Delete(t.Context(), "podcap-agent-n2", deleteOpts)
		}, []string{"get", "web"}, "no running podcap agent on node n2"},
	} {
		t.Run(name, func(t *testing.T) {
			te := getEnv(t)
			if tc.setup != nil {
				tc.setup(te)
			}
			dir := t.TempDir()
			err := te.run(t, append(tc.args, "-o", dir)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("%d files written", len(ents))
			}
		})
	}
}

func TestGetRotatedFileSkipped(t *testing.T) {
	te := getEnv(t)
	delete(te.agents["n2"].files, "shop/web/capture-web.pcap1")
	dir := t.TempDir()
	if err := te.run(t, "get", "web", "-o", dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(te.errOut.String(), "warning: capture-web.pcap1 of shop/web is gone") {
		t.Errorf("stderr %q", te.errOut)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("%d files, want 2", len(ents))
	}
}

// A user who may read captures but not get pods (deploy/examples/capture-reader.yaml grants
// pods/capture alone) is served by the agent that has the pod.
func TestPodNodeForbidden(t *testing.T) {
	te := getEnv(t)
	te.kube.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return a.GetNamespace() == "shop", nil, forbidden()
	})
	te.agents["n2"].decisions["shop/web"] = explanation()
	dir := t.TempDir()
	if err := te.run(t, "get", "web", "-o", dir); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 3 {
		t.Errorf("%d files, want 3", len(ents))
	}
	if err := te.run(t, "explain", "web"); err != nil || !strings.HasPrefix(te.out.String(), "Pod:       shop/web (node n2)") {
		t.Errorf("explain: %v\n%s", err, te.out)
	}
	err := te.run(t, "stream", "nope")
	if err == nil || !strings.Contains(err.Error(), "pod shop/nope: no agent knows it (you may not get the pod to find its node: get pod shop/nope:") {
		t.Errorf("a pod no agent knows: %v", err)
	}
}

func TestGetSeveralCaptures(t *testing.T) {
	te := getEnv(t)
	a := te.agents["n2"]
	manual := a.captures[0].(map[string]any)
	manual["id"] = "manual"
	rec := capItem("shop", "web", "recorder", "running", "recorder_0.pcap")
	rec["id"] = "recorder"
	a.captures = append(a.captures, rec)
	a.files["shop/web/recorder_0.pcap"] = a.files["shop/web/capture-web.pcap2"]

	err := te.run(t, "get", "web", "-o", t.TempDir())
	if err == nil || err.Error() != "pod shop/web has 2 captures (manual, recorder): choose one with --capture" {
		t.Errorf("err %v", err)
	}
	dir := t.TempDir()
	if err := te.run(t, "get", "web", "--capture", "recorder", "--merge", "-o", dir); err != nil {
		t.Fatal(err)
	}
	if te.out.String() != filepath.Join(dir, "web-recorder.pcap")+"\n" {
		t.Errorf("output %q", te.out)
	}
	if err := te.run(t, "get", "web", "--capture", "policy-1", "-o", dir); err == nil || !strings.Contains(err.Error(), `no capture "policy-1" of pod shop/web`) {
		t.Errorf("unknown ID: %v", err)
	}
	if err := te.run(t, "ls", "-o", "wide"); err != nil || !hasWideID(te.out.String(), "recorder") {
		t.Errorf("ls -o wide: %v\n%s", err, te.out)
	}
}

func hasWideID(table, id string) bool {
	for _, l := range strings.Split(table, "\n") {
		if f := strings.Fields(l); len(f) > 10 && f[10] == id {
			return true
		}
	}
	return false
}
