package capture_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/podcap/podcap/agent/capture"
)

// fileNames returns the API names of a listing's files.
func fileNames(l capture.Listing) string {
	var out []string
	for _, f := range l.Files {
		out = append(out, f.Name)
	}
	return strings.Join(out, " ")
}

// readAll opens a capture file through the manager and returns what it serves.
func readAll(t *testing.T, m *capture.Manager, ns, pod, name string) ([]byte, error) {
	t.Helper()
	f, err := m.OpenFile(ns, pod, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size))
	if err != nil {
		t.Fatal(err)
	}
	return b, nil
}

// finishedCapture writes a finished policy capture of pod by hand, as an earlier capture
// left it: a ring of 3 files whose newest is index 0 (so the order is 1, 2, 0) and one
// pre-trigger file. It returns the directory.
func finishedCapture(t *testing.T, base, pod string) string {
	t.Helper()
	dir := filepath.Join(base, "default", pod, "policy-20261206T120000.000Z")
	if err := os.MkdirAll(filepath.Join(dir, capture.PreTriggerDir), 0o750); err != nil {
		t.Fatal(err)
	}
	meta := `{"namespace":"default","pod":"` + pod + `","uid":"u","source":"policy","reason":"r","files":3,"file_size_bytes":1000000,` +
		`"format":"pcap","engine":"tcpdump","alerts":["fp1"],"pre_trigger":["pre-trigger/capture-` + pod + `.pcap"],` +
		`"started":"2026-12-06T12:00:00Z","stopped":"2026-12-06T12:05:00Z","stop_reason":"no longer decided"}`
	files := map[string]string{
		"capture.json":                         meta,
		"capture-" + pod + ".pcap1":            "one",
		"capture-" + pod + ".pcap2":            "two",
		"capture-" + pod + ".pcap0":            "zero",
		"pre-trigger/capture-" + pod + ".pcap": "pre",
		"notes.txt":                            "not a ring file",
	}
	mtime := time.Date(2026, 12, 6, 12, 1, 0, 0, time.UTC)
	for _, name := range []string{"capture.json", "notes.txt", "pre-trigger/capture-" + pod + ".pcap", "capture-" + pod + ".pcap1", "capture-" + pod + ".pcap2", "capture-" + pod + ".pcap0"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(files[name]), 0o600); err != nil {
			t.Fatal(err)
		}
		mtime = mtime.Add(time.Second)
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCapturesListsLiveAndFinished(t *testing.T) {
	f := newFixture(t, 4, nil)
	finishedCapture(t, f.dir, "web")
	src := startStreamed(t, f, "web", 1)
	pushPackets(src, 0, 2)
	eventually(t, "2 packets", func() bool { return ringPackets(f, "web") == 2 })
	ls := f.m.Captures("default")
	if len(ls) != 2 {
		t.Fatalf("%d captures, want 2: %+v", len(ls), ls)
	}
	old, live := ls[0], ls[1]
	if old.ID != "policy-20261206T120000.000Z" || old.State != "finished" || old.Source != "policy" || old.Live != nil ||
		old.Stopped.IsZero() || len(old.Alerts) != 1 {
		t.Errorf("finished capture %+v", old)
	}
	const want = "policy-20261206T120000.000Z_capture-web.pcap1 policy-20261206T120000.000Z_capture-web.pcap2 " +
		"policy-20261206T120000.000Z_capture-web.pcap0 policy-20261206T120000.000Z_pre-trigger_capture-web.pcap"
	if fileNames(old) != want {
		t.Errorf("finished capture's files:\n%s\nwant\n%s", fileNames(old), want)
	}
	if live.ID != capture.IDManual || live.State != "running" || live.Live == nil || fileNames(live) != "capture-web.pcap0" {
		t.Errorf("live capture %+v", live)
	}
	if len(f.m.Captures("other")) != 0 {
		t.Error("namespace other lists captures")
	}
	// the live ring's current file is served flushed: both packets, whole
	b, err := readAll(t, f.m, "default", "web", "capture-web.pcap0")
	if err != nil {
		t.Fatal(err)
	}
	if _, sizes := decodeStream(t, b); len(sizes) != 2 {
		t.Errorf("live file holds %d packets, want 2", len(sizes))
	}
	for name, content := range map[string]string{
		"policy-20261206T120000.000Z_capture-web.pcap2":            "two",
		"policy-20261206T120000.000Z_pre-trigger_capture-web.pcap": "pre",
	} {
		if b, err := readAll(t, f.m, "default", "web", name); err != nil || string(b) != content {
			t.Errorf("%s: %q, %v", name, b, err)
		}
	}
}

// Only the names the listing gives open; nothing is ever opened through a symlink or outside
// the capture's directory.
func TestOpenFileRefusesEverythingElse(t *testing.T) {
	f := newFixture(t, 4, nil)
	dir := finishedCapture(t, f.dir, "web")
	finishedCapture(t, f.dir, "db")
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(f.dir, "default", "db", "policy-20261206T120000.000Z", "capture-db.pcap0")
	// symlinks planted in the capture's directory under the ring's own names
	for name, target := range map[string]string{"capture-web.pcap1": outside, "capture-web.pcap2": other, "pre-trigger/capture-web.pcap": outside} {
		p := filepath.Join(dir, name)
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	if got := fileNames(f.m.Captures("default")[1]); got != "policy-20261206T120000.000Z_capture-web.pcap0" {
		t.Errorf("files listed with symlinks planted: %s", got)
	}
	for _, tc := range []struct{ ns, pod, name string }{
		{"default", "web", "policy-20261206T120000.000Z_capture-web.pcap1"},            // symlink outside
		{"default", "web", "policy-20261206T120000.000Z_capture-web.pcap2"},            // symlink to db's file
		{"default", "web", "policy-20261206T120000.000Z_pre-trigger_capture-web.pcap"}, // symlink outside
		{"default", "web", "policy-20261206T120000.000Z_capture-db.pcap0"},             // another pod's file
		{"default", "web", "../db/policy-20261206T120000.000Z/capture-db.pcap0"},       // a path
		{"default", "web", "policy-20261206T120000.000Z/capture-web.pcap0"},            // a path
		{"default", "web", "policy-20261206T120000.000Z_notes.txt"},                    // not a capture file
		{"default", "web", "policy-20261206T120000.000Z_capture.json"},                 // not a capture file
		{"default", "..", "capture-web.pcap0"},                                         // bad pod
		{"..", "web", "capture-web.pcap0"},                                             // bad namespace
		{"default", "web", ""},
	} {
		if b, err := readAll(t, f.m, tc.ns, tc.pod, tc.name); !errors.Is(err, capture.ErrFileNotFound) {
			t.Errorf("OpenFile(%s, %s, %q) = %q, %v; want ErrFileNotFound", tc.ns, tc.pod, tc.name, b, err)
		}
	}
	if b, err := readAll(t, f.m, "default", "db", "policy-20261206T120000.000Z_capture-db.pcap0"); err != nil || !bytes.Equal(b, []byte("zero")) {
		t.Errorf("db's own file: %q, %v", b, err)
	}
}

// A pod's flight recorder and its policy capture are listed side by side, the capture's
// preserved pre-trigger file named <id>_pre-trigger_<file>, and each opens.
func TestCapturesListsRecorderAndPreTrigger(t *testing.T) {
	f := newFixture(t, 4, heldSource)
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, f.m, recorderSpec("web"))
	eventually(t, "the recorder's packets", func() bool { st, _ := f.m.RecorderStatus("default", "web"); return st.Packets == 2 })
	ensure(t, f.m, policySpec("web", 0))
	eventually(t, "the policy capture runs", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	id := filepath.Base(sessionDir(t, f, "web"))
	var rec, pol capture.Listing
	eventually(t, "both listed with their files", func() bool { // the ring's first file comes as its process runs
		ls := f.m.Captures("")
		if len(ls) != 2 {
			return false
		}
		byID := map[string]capture.Listing{ls[0].ID: ls[0], ls[1].ID: ls[1]}
		rec, pol = byID[capture.IDRecorder], byID[id]
		return len(rec.Files) > 0 && len(pol.Files) == 2
	})
	if rec.Source != capture.SourceRecorder || !strings.HasPrefix(fileNames(rec), "recorder_capture-web.pcap0") {
		t.Errorf("recorder listed %+v", rec)
	}
	if pol.Source != capture.SourcePolicy || fileNames(pol) != id+"_capture-web.pcap0 "+id+"_pre-trigger_capture-web.pcap0" {
		t.Errorf("policy capture's files %q", fileNames(pol))
	}
	for _, name := range []string{id + "_pre-trigger_capture-web.pcap0", "recorder_capture-web.pcap0"} {
		b, err := readAll(t, f.m, "default", "web", name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r, err := pcapgo.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n := 0
		for ; ; n++ {
			if _, _, err := r.ReadPacketData(); err != nil {
				break
			}
		}
		if n != 2 { // the recorder's two packets, preserved
			t.Errorf("%s holds %d packets, want 2", name, n)
		}
	}
}
