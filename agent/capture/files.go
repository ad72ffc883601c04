package capture

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The captures a pod has on this node and their files, for the retrieval API: the live ones
// (queued, running, stopping, or expired with their files kept) and the finished policy and
// alert captures kept on disk under retention (found by their capture.json).
//
// A file is named in the API by the capture's ID and its name in the capture's directory, so
// that the names of all the captures of a pod differ: a manual ring's files keep their own
// names (capture-<pod>.pcap0, what tcpdump would call them); any other capture's are
// "<id>_<name>" (recorder_capture-<pod>.pcap0, policy-20261206T231500.000Z_capture-<pod>.pcap0)
// and the flight recorder files a policy or alert capture preserved are
// "<id>_pre-trigger_<name>". '_' is in no pod name, capture directory or ring file name, so
// the names are unambiguous; OpenFile only ever looks a name up among them.

// IDs of the captures that are not in a directory of their own.
const (
	IDManual   = SourceManual
	IDRecorder = RecorderDir
)

// Listing is one capture of a pod and its files.
type Listing struct {
	Namespace, Pod string
	ID             string // IDManual, IDRecorder, or the capture's directory name
	Source         string
	Reason         string
	Alerts         []string
	// State is running, starting, queued, failed (retrying after a failed attempt),
	// stopping or finished.
	State            string
	Started, Stopped time.Time
	Format           string // of the files: FormatPcap or FormatPcapng
	Files            []FileInfo
	// Live is the capture's status when the manager runs or remembers it; nil for a
	// finished capture found on disk, whose counters are then Final (nil when its
	// capture.json has none).
	Live  *Status
	Final *FinalCounts
}

// FileInfo is one file of a capture, as the API names it.
type FileInfo struct {
	Name     string
	Size     int64
	Modified time.Time

	dir  string // the capture's directory
	rel  string // the file's path in it: a ring file's name, or pre-trigger/<name>
	ring *Ring  // the live ring writing it, if any
}

// ErrFileNotFound is OpenFile's error for a name that is none of the capture's files.
var ErrFileNotFound = errors.New("no such capture file")

// Captures lists the captures of the pods of namespace ("" all namespaces) and their files,
// ordered by namespace, pod and start; each capture's files in ring order, oldest first,
// then its pre-trigger files.
func (m *Manager) Captures(namespace string) []Listing {
	return m.listings(func(ns, _ string) bool { return namespace == "" || ns == namespace })
}

// listings lists the live captures and the finished ones kept on disk of the pods want accepts.
func (m *Manager) listings(want func(namespace, pod string) bool) []Listing {
	m.mu.Lock()
	var live []*run
	for _, set := range []map[string]*run{m.runs, m.stopping} {
		for _, r := range set {
			if want(r.spec.Namespace, r.spec.Pod) {
				live = append(live, r)
			}
		}
	}
	m.mu.Unlock()
	var out []Listing
	seen := map[string]bool{}
	for _, r := range live {
		if seen[r.dir] {
			continue
		}
		seen[r.dir] = true
		out = append(out, r.listing())
	}
	out = append(out, m.finishedOnDisk(want, seen)...)
	slices.SortFunc(out, func(a, b Listing) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Pod, b.Pod), a.Started.Compare(b.Started), strings.Compare(a.ID, b.ID))
	})
	return out
}

// listing describes a live capture.
func (r *run) listing() Listing {
	st := r.status()
	r.mu.Lock()
	ring, pre := r.ring, append([]string(nil), r.preTrigger...)
	r.mu.Unlock()
	l := Listing{
		Namespace: st.Spec.Namespace, Pod: st.Spec.Pod, ID: captureID(st.Spec.Source, r.dir), Source: sourceLabel(st.Spec),
		Reason: st.Spec.Reason, State: stateOf(st.Phase), Started: st.Started, Format: ringFormat(st.Spec), Live: &st,
	}
	if st.Spec.Alerts != "" {
		l.Alerts = strings.Split(st.Spec.Alerts, ",")
	}
	if ring != nil {
		for _, p := range ring.Files() {
			if fi, ok := fileInfo(r.dir, filepath.Base(p), l.ID); ok {
				fi.ring = ring
				l.Files = append(l.Files, fi)
			}
		}
	}
	l.Files = append(l.Files, preTriggerFiles(r.dir, pre, l.ID)...)
	return l
}

// captureID is a capture's ID: its source for the captures without a directory of their own.
func captureID(source, dir string) string {
	switch source {
	case SourceManual, "":
		return IDManual
	case SourceRecorder:
		return IDRecorder
	}
	return filepath.Base(dir)
}

func stateOf(p Phase) string {
	switch p {
	case PhaseQueued:
		return "queued"
	case PhaseStarting:
		return "starting"
	case PhaseRunning:
		return "running"
	case PhaseBackoff:
		return "failed"
	case PhaseStopping:
		return "stopping"
	}
	return "finished"
}

// fileInfo describes the regular file rel of dir (no symlink), named for the API.
func fileInfo(dir, rel, id string) (FileInfo, bool) {
	fi, err := os.Lstat(filepath.Join(dir, rel))
	if err != nil || !fi.Mode().IsRegular() {
		return FileInfo{}, false
	}
	name := strings.ReplaceAll(rel, "/", "_")
	if id != IDManual {
		name = id + "_" + name
	}
	return FileInfo{Name: name, Size: fi.Size(), Modified: fi.ModTime().UTC(), dir: dir, rel: rel}, true
}

// preTriggerFiles describes a capture's pre-trigger files (pre-trigger/<name>, oldest first).
func preTriggerFiles(dir string, rels []string, id string) []FileInfo {
	var out []FileInfo
	for _, rel := range rels {
		base, ok := strings.CutPrefix(rel, PreTriggerDir+"/")
		if !ok || ValidateRingBase(base, 1) != nil {
			continue // not what preserveRecorder writes
		}
		if fi, ok := fileInfo(dir, rel, id); ok {
			out = append(out, fi)
		}
	}
	return out
}

// finishedOnDisk lists the finished policy and alert captures kept in the capture
// directory (<namespace>/<pod>/<source>-<start>/capture.json) of the pods want accepts,
// except those in the directories skip names (live ones).
func (m *Manager) finishedOnDisk(want func(namespace, pod string) bool, skip map[string]bool) []Listing {
	var out []Listing
	for _, ns := range subdirs(m.cfg.Dir) {
		for _, pod := range subdirs(filepath.Join(m.cfg.Dir, ns)) {
			if !want(ns, pod) {
				continue
			}
			podDir := filepath.Join(m.cfg.Dir, ns, pod)
			ents, _ := os.ReadDir(podDir)
			for _, e := range ents {
				dir := filepath.Join(podDir, e.Name())
				if !e.IsDir() || skip[dir] || !strings.Contains(e.Name(), "-") {
					continue // <source>-<start>: a policy or alert capture's directory
				}
				if l, ok := finishedListing(ns, pod, dir); ok {
					out = append(out, l)
				}
			}
		}
	}
	return out
}

// subdirs returns the names of dir's directories (not symlinks) that are valid path names.
func subdirs(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if e.IsDir() && ValidatePathName(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// finishedListing describes the finished capture in dir from its capture.json.
func finishedListing(ns, pod, dir string) (Listing, bool) {
	b, err := os.ReadFile(filepath.Join(dir, sessionMetaFile))
	if err != nil {
		return Listing{}, false
	}
	var meta sessionMeta
	if err := json.Unmarshal(b, &meta); err != nil || meta.Namespace != ns || meta.Pod != pod || meta.Files < 1 {
		return Listing{}, false
	}
	spec := Spec{Namespace: ns, Pod: pod, Source: meta.Source, Format: meta.Format}
	l := Listing{
		Namespace: ns, Pod: pod, ID: filepath.Base(dir), Source: sourceLabel(spec), Reason: meta.Reason, Alerts: meta.Alerts,
		State: "finished", Started: meta.Started, Stopped: meta.Stopped, Format: ringFormat(spec), Final: meta.Counts,
	}
	for _, name := range ringInOrder(dir, ringBase(spec), meta.Files) {
		if fi, ok := fileInfo(dir, name, l.ID); ok {
			l.Files = append(l.Files, fi)
		}
	}
	l.Files = append(l.Files, preTriggerFiles(dir, meta.PreTrigger, l.ID)...)
	return l, true
}

// ringInOrder returns the names of the files of a ring that is no longer written, oldest
// first: after the newest one (as adoptRing finds it) in ring order.
func ringInOrder(dir, base string, files int) []string {
	var newest time.Time
	var tied []int
	exist := make([]bool, files)
	for i := range files {
		fi, err := os.Lstat(filepath.Join(dir, RingFileName(base, files, i)))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		exist[i] = true
		switch mt := fi.ModTime(); {
		case len(tied) == 0 || mt.After(newest):
			newest, tied = mt, []int{i}
		case mt.Equal(newest):
			tied = append(tied, i)
		}
	}
	if len(tied) == 0 {
		return nil
	}
	last := newestOf(dir, base, files, tied)
	var out []string
	for i := 1; i <= files; i++ {
		if idx := (last + i) % files; exist[idx] {
			out = append(out, RingFileName(base, files, idx))
		}
	}
	return out
}

// CaptureFile is a capture file opened for reading, as it was when it was opened.
type CaptureFile struct {
	*os.File
	Name     string // as the API names it
	Size     int64  // what to serve: the file's size at open time (whole records for a live ring)
	Modified time.Time
	Format   string
}

// OpenFile opens the file the API calls name among the pod's captures' files as they are
// now (never a path made from name): a regular file in its capture's directory, never
// through a symlink. A file the ring is writing is flushed first and served as it is then.
// Any other name is ErrFileNotFound.
func (m *Manager) OpenFile(namespace, pod, name string) (*CaptureFile, error) {
	if _, err := m.podDir(namespace, pod); err != nil {
		return nil, ErrFileNotFound
	}
	for _, l := range m.listings(func(ns, p string) bool { return ns == namespace && p == pod }) {
		for _, fi := range l.Files {
			if fi.Name != name {
				continue
			}
			f, info, err := m.openCaptureFile(fi)
			if err != nil {
				return nil, fmt.Errorf("open capture file %s: %w", name, err)
			}
			return &CaptureFile{File: f, Name: name, Size: info.Size(), Modified: info.ModTime().UTC(), Format: l.Format}, nil
		}
	}
	return nil, ErrFileNotFound
}

// openCaptureFile opens fi: through its live ring (flushed first), else in its capture's
// directory opened as an os.Root under the capture directory.
func (m *Manager) openCaptureFile(fi FileInfo) (*os.File, os.FileInfo, error) {
	if fi.ring != nil {
		f, info, err := fi.ring.OpenFile(fi.rel)
		if !errors.Is(err, ErrRingClosed) {
			return f, info, err
		}
	}
	base, err := os.OpenRoot(m.cfg.Dir)
	if err != nil {
		return nil, nil, err
	}
	defer base.Close()
	rel, err := filepath.Rel(m.cfg.Dir, fi.dir)
	if err != nil {
		return nil, nil, err
	}
	root, err := base.OpenRoot(rel)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	return openRegular(root, fi.rel)
}

// openRegular opens name in root for reading if it is a regular file and not a symlink: the
// file opened must be the one Lstat saw (a symlink swapped in meanwhile is refused too).
func openRegular(root *os.Root, name string) (*os.File, os.FileInfo, error) {
	before, err := root.Lstat(name)
	if err != nil {
		return nil, nil, err
	}
	if !before.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: %w", name, ErrFileNotFound)
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() || !os.SameFile(before, info) {
		f.Close()
		return nil, nil, fmt.Errorf("%s changed while opened: %w", name, ErrFileNotFound)
	}
	return f, info, nil
}
