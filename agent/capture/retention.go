package capture

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// Retention bounds what capture files keep on the node: finished non-manual captures'
// directories older than MaxAge are removed, and while the files of finished captures plus
// what the live captures reserved (their worst case, see Manager.Ensure) exceed MaxBytes the
// oldest finished directories are removed first. Live captures are never evicted: their
// reservations are what they may write, and Ensure keeps those under MaxBytes.
type Retention struct {
	MaxAge   time.Duration // default 24h
	MaxBytes int64         // node byte budget of all capture files; default 1 GiB
	Interval time.Duration // how often to sweep; default 1m (and after each capture ends)
}

func (r *Retention) setDefaults() {
	if r.MaxAge <= 0 {
		r.MaxAge = 24 * time.Hour
	}
	if r.MaxBytes <= 0 {
		r.MaxBytes = 1 << 30
	}
	if r.Interval <= 0 {
		r.Interval = time.Minute
	}
}

// sessionMeta is written beside the ring of a non-manual capture (capture.json), so that
// someone who finds the files later knows why they exist.
type sessionMeta struct {
	Namespace     string `json:"namespace"`
	Pod           string `json:"pod"`
	UID           string `json:"uid"`
	Source        string `json:"source"`
	Reason        string `json:"reason,omitempty"`
	Files         int    `json:"files"`
	FileSizeBytes int64  `json:"file_size_bytes"`
	Snaplen       int    `json:"snaplen,omitempty"`
	Filter        string `json:"filter,omitempty"`
	MaxDuration   string `json:"max_duration,omitempty"`
	Format        string `json:"format"`
	Engine        string `json:"engine"`
	StopGrace     string `json:"stop_grace,omitempty"`
	Cooldown      string `json:"cooldown,omitempty"`
	// Alerts are the fingerprints of the alerts behind an alert capture; Trigger says what
	// started the capture, one item a line (Spec.Trigger). Both as of its latest decision.
	Alerts  []string `json:"alerts,omitempty"`
	Trigger []string `json:"trigger,omitempty"`
	// PreTrigger are the flight recorder's files preserved as the capture started (hard
	// links), relative to its directory: pre-trigger/capture-<pod>.pcap0, oldest first.
	PreTrigger []string  `json:"pre_trigger,omitempty"`
	Started    time.Time `json:"started"`
	Stopped    time.Time `json:"stopped,omitzero"`
	StopReason string    `json:"stop_reason,omitempty"`
	// Counts are the capture's packets, bytes and kernel drops as the agent that stopped it
	// counted them (since that agent's start: after a restart, what it captured itself);
	// written at the stop, absent before and in a capture.json of an older agent.
	Counts *FinalCounts `json:"counts,omitempty"`
}

// FinalCounts are a finished capture's counters, from its capture.json.
type FinalCounts struct {
	Packets     uint64 `json:"packets"`
	Bytes       uint64 `json:"bytes"`
	KernelDrops uint64 `json:"kernel_drops"`
}

const sessionMetaFile = "capture.json"

// writeSessionMeta writes dir/capture.json atomically (temp file + rename). Its started is
// always when the capture began (armDeadline), the same in the first write and at the stop:
// not when a process ran, which a failed first attempt or a restart makes later than packets
// already in the files.
func writeSessionMeta(r *run, stopped time.Time, why string) error {
	r.mu.Lock()
	started := r.began
	reason, maxDuration, grace, cool, alerts, trigger := r.reason, r.maxDuration, r.stopGrace, r.cooldown, r.alerts, r.trigger
	pre := append([]string(nil), r.preTrigger...)
	r.mu.Unlock()
	meta := sessionMeta{
		Namespace: r.spec.Namespace, Pod: r.spec.Pod, UID: r.spec.UID, Source: r.spec.Source, Reason: reason,
		Files: r.spec.Files, FileSizeBytes: r.spec.FileSize, Snaplen: r.spec.Snaplen, Filter: r.spec.Filter,
		Format: r.spec.format(), Engine: r.spec.Engine, Started: started.UTC(), Stopped: stopped.UTC(), StopReason: why, PreTrigger: pre,
	}
	if maxDuration > 0 {
		meta.MaxDuration = maxDuration.String()
	}
	if grace > 0 {
		meta.StopGrace = grace.String()
	}
	if cool > 0 {
		meta.Cooldown = cool.String()
	}
	if alerts != "" {
		meta.Alerts = strings.Split(alerts, ",")
	}
	if trigger != "" {
		meta.Trigger = strings.Split(trigger, "\n")
	}
	if stopped.IsZero() {
		meta.Stopped = time.Time{}
	} else {
		st := r.status()
		meta.Counts = &FinalCounts{Packets: st.Packets, Bytes: st.Bytes, KernelDrops: st.KernelDrops}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // generator URLs stay readable (and within sessionMetaReserve)
	enc.SetIndent("", "  ")
	if err := enc.Encode(meta); err != nil {
		return err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	tmp, err := os.CreateTemp(r.dir, "."+sessionMetaFile+".*")
	if err != nil {
		return fmt.Errorf("write capture metadata: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write capture metadata: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write capture metadata: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(r.dir, sessionMetaFile)); err != nil {
		return fmt.Errorf("write capture metadata: %w", err)
	}
	return nil
}

// kickSweep asks Run for a retention sweep soon; never blocks.
func (m *Manager) kickSweep() {
	select {
	case m.sweepNow <- struct{}{}:
	default:
	}
}

type session struct {
	dir   string
	mtime time.Time // newest file in it
	bytes int64
}

// sweep applies the retention rules and counts the bytes of the files no live capture
// writes (m.kept).
func (m *Manager) sweep() {
	m.sweepMu.Lock()
	defer m.sweepMu.Unlock()
	log := klog.Background().WithName("retention")
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	live := m.dirsInUseLocked(nil)
	m.mu.Unlock()

	var total int64 // bytes of files outside live captures' directories
	var finished []session
	_ = filepath.WalkDir(m.cfg.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished meanwhile
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil && !liveFile(live, filepath.Dir(p)) {
				total += fi.Size() // a live capture's ring (and pre-trigger files) count in its reservation
			}
			return nil
		}
		rel, _ := filepath.Rel(m.cfg.Dir, p)
		if !d.IsDir() || strings.Count(rel, string(filepath.Separator)) != 2 {
			return nil
		}
		// <namespace>/<pod>/<source>-<start>: a non-manual capture's directory
		if live[p] || !strings.Contains(d.Name(), "-") {
			return nil
		}
		s := session{dir: p}
		if fi, err := d.Info(); err == nil {
			s.mtime = fi.ModTime() // a capture that has not written yet is new, not old
		}
		_ = filepath.WalkDir(p, func(_ string, f fs.DirEntry, err error) error {
			if err == nil && f.Type().IsRegular() {
				if fi, err := f.Info(); err == nil {
					s.bytes += fi.Size()
					if fi.ModTime().After(s.mtime) {
						s.mtime = fi.ModTime()
					}
				}
			}
			return nil
		})
		total += s.bytes
		finished = append(finished, s)
		return fs.SkipDir
	})
	slices.SortFunc(finished, func(a, b session) int { return a.mtime.Compare(b.mtime) })
	ret := m.cfg.Retention
	for _, s := range finished {
		m.mu.Lock()
		reserved := m.reserved
		m.mu.Unlock()
		why := ""
		switch {
		case now.Sub(s.mtime) > ret.MaxAge:
			why = "age"
		case total+reserved > ret.MaxBytes:
			why = "budget"
		default:
			continue
		}
		if m.isLive(s.dir) { // started since the scan
			continue
		}
		if err := os.RemoveAll(s.dir); err != nil {
			log.Error(err, "Evicting capture files", "dir", s.dir)
			continue
		}
		total -= s.bytes
		m.cfg.Metrics.RetentionEvictions.WithLabelValues(why).Inc()
		log.Info("Evicted capture files", "dir", s.dir, "reason", why, "bytes", s.bytes)
		m.pruneDirs(filepath.Dir(s.dir), nil)
	}
	m.mu.Lock()
	m.kept = total
	reserved := m.reserved
	m.mu.Unlock()
	if total+reserved > ret.MaxBytes {
		// files that are no capture's (put there by hand, or a ring of an earlier agent's
		// that no pod asks for any more) are not retention's to delete
		log.Info("Capture files exceed the node's byte budget and nothing more can be evicted", "bytes", total, "reserved", reserved, "budget", ret.MaxBytes)
	}
}

// dirsInUseLocked returns the directories of every capture but self that may still write:
// queued, starting, running or being stopped, and the earlier captures of the same pods they
// wait for. Expired captures are done: their directories are retention's.
func (m *Manager) dirsInUseLocked(self *run) map[string]bool {
	live := map[string]bool{}
	add := func(r *run) {
		for ; r != nil; r = r.prev {
			select {
			case <-r.done:
				return // it and those it waited for are done
			default:
			}
			if r != self {
				live[r.dir] = true
			}
		}
	}
	for _, r := range m.runs {
		if r.getPhase() != PhaseExpired {
			add(r)
		}
	}
	for _, r := range m.stopping {
		add(r)
	}
	return live
}

func (m *Manager) isLive(dir string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dirsInUseLocked(nil)[dir]
}

// liveFile reports whether a file in dir belongs to a live capture: dir is the capture's
// directory, or its pre-trigger/ directory (those bytes are in the capture's reservation).
func liveFile(live map[string]bool, dir string) bool {
	return live[dir] || filepath.Base(dir) == PreTriggerDir && live[filepath.Dir(dir)]
}
