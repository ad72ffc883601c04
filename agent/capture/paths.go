package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// ValidatePathName accepts a name that may become one element of a path under the capture
// directory: a Kubernetes DNS-1123 subdomain (what pod names and, stricter, namespaces are),
// so it has no '/', no leading '.', and is at most 253 bytes.
func ValidatePathName(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("%q is not a valid name: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// RingBase is the file name tcpdump would be given for a pod (`-w capture-<pod>.pcap`); the
// ring's files are this name plus the ring index.
func RingBase(pod string) string { return "capture-" + pod + ".pcap" }

// CleanStale deletes the manual ring of every pod under dir for which keep returns false, and
// the flight recorder's files of every pod for which exists returns false (the directories of
// finished policy captures stay, under retention; a recorder of a pod that exists is the
// pod's sync's to keep or stop: StopRecorder). It runs once at start, after the pod cache has
// synced, so that the files of pods that are gone or no longer annotated do not outlive an
// agent restart.
func (m *Manager) CleanStale(keep, exists func(namespace, pod string) bool) (removed []string, err error) {
	nss, err := os.ReadDir(m.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("read capture dir: %w", err)
	}
	var errs []error
	for _, ns := range nss {
		if !ns.IsDir() || ValidatePathName(ns.Name()) != nil {
			continue
		}
		pods, err := os.ReadDir(filepath.Join(m.cfg.Dir, ns.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, p := range pods {
			if !p.IsDir() || ValidatePathName(p.Name()) != nil {
				continue
			}
			key, rkey := Key(ns.Name(), p.Name()), recorderSlot(ns.Name(), p.Name())
			dir := filepath.Join(m.cfg.Dir, ns.Name(), p.Name())
			m.mu.Lock()
			busy := m.runs[key] != nil || m.stopping[key] != nil
			recBusy := m.runs[rkey] != nil || m.stopping[rkey] != nil
			m.mu.Unlock()
			if !recBusy && !exists(ns.Name(), p.Name()) {
				if _, err := os.Lstat(filepath.Join(dir, RecorderDir)); err == nil {
					m.removeRecorder(filepath.Join(dir, RecorderDir), nil)
					removed = append(removed, rkey)
				}
			}
			if busy || keep(ns.Name(), p.Name()) {
				continue
			}
			if hasManualRing(dir, p.Name()) {
				m.removeManualRing(dir, p.Name(), nil)
				removed = append(removed, key)
			}
		}
		_ = os.Remove(filepath.Join(m.cfg.Dir, ns.Name())) // only when empty
	}
	return removed, errors.Join(errs...)
}

// adoptRing prepares dir for a ring of files named after base, left by an earlier agent or
// capture: files that are not this ring's (another ring size) are removed, and the index
// after the newest of the ring's own files is returned, so a restarted agent continues the
// ring where it stopped instead of mixing a new lap into the old one.
func adoptRing(dir, base string, files int) (start int, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read capture directory: %w", err)
	}
	own := make(map[string]int, files)
	for i := range files {
		own[RingFileName(base, files, i)] = i
	}
	var newest time.Time
	var tied []int // indices of the files with the newest mtime
	for _, e := range entries {
		i, ok := own[e.Name()]
		if !ok {
			if e.Type().IsRegular() && strings.HasPrefix(e.Name(), base) {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
					return 0, fmt.Errorf("remove file of an earlier ring: %w", err)
				}
			}
			continue
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		switch mt := info.ModTime(); {
		case len(tied) == 0 || mt.After(newest):
			newest, tied = mt, []int{i}
		case mt.Equal(newest):
			tied = append(tied, i)
		}
	}
	if len(tied) == 0 {
		return 0, nil
	}
	return (newestOf(dir, base, files, tied) + 1) % files, nil
}

// newestOf picks the file written last among ring files with the same mtime (at high rates
// a ring rotates several times within one tick of the file system's clock): a file holding
// only its header is the one that was being written; otherwise the one whose first packet is
// the latest.
func newestOf(dir, base string, files int, tied []int) int {
	best, bestTS := tied[0], time.Time{}
	for _, i := range tied {
		ts, packets := firstPacketTime(filepath.Join(dir, RingFileName(base, files, i)))
		if !packets {
			return i
		}
		if ts.After(bestTS) {
			best, bestTS = i, ts
		}
	}
	return best
}

// firstPacketTime reads the timestamp of a pcap file's first packet; packets is false for
// a file that holds no whole record header (or is not a pcap file this ring writes).
func firstPacketTime(path string) (ts time.Time, packets bool) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	var b [pcapFileHeaderLen + pcapRecordHeaderLen]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return time.Time{}, false
	}
	var order binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint32(b[0:4]) == pcapMagicMicro:
		order = binary.LittleEndian
	case binary.BigEndian.Uint32(b[0:4]) == pcapMagicMicro:
		order = binary.BigEndian
	default:
		return time.Time{}, false
	}
	rec := b[pcapFileHeaderLen:]
	return time.Unix(int64(order.Uint32(rec[0:4])), int64(order.Uint32(rec[4:8]))*1000), true
}

// hasManualRing reports whether dir holds files of the pod's manual ring.
func hasManualRing(dir, pod string) bool {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), RingBase(pod)) {
			return true
		}
	}
	return false
}
