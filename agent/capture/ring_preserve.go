package capture

import (
	"fmt"
	"os"
	"path/filepath"
)

// Preserve hard-links the ring's files as they are now into dir (an existing directory on
// the same file system; a flight recorder's files become a capture's pre-trigger evidence)
// and seals them: buffered packets are written first, and if the current file holds packets
// the ring moves on to its next file, so that no linked file is written again. Nothing is
// copied: a link costs no I/O however busy the ring is, and rotation by unlink + create
// (openLocked) leaves the linked inodes to dir. It returns the names linked, oldest first,
// and the bytes they hold. A file that cannot be linked fails Preserve (the links made are
// left for the caller to remove with dir); a failed rotation is the ring's own write error,
// reported by its next write.
func (r *Ring) Preserve(dir string) (names []string, size int64, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, 0, ErrRingClosed
	}
	if r.f != nil && r.err == nil {
		if err := r.flushLocked(); err != nil {
			return nil, 0, err
		}
	}
	cur := r.index
	if r.pending {
		cur = (r.index - 1 + r.files) % r.files
	}
	for i := 1; i <= r.files; i++ {
		idx := (cur + i) % r.files
		name := RingFileName(r.base, r.files, idx)
		if r.sizes[idx] == 0 || idx == r.index && r.f != nil && r.filePkts == 0 {
			continue // no file, or the current file holds only its header
		}
		fi, err := r.root.Lstat(name)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if err := os.Link(filepath.Join(r.dir, name), filepath.Join(dir, name)); err != nil {
			return names, size, fmt.Errorf("link %s: %w", name, err)
		}
		names = append(names, name)
		size += fi.Size()
	}
	if r.f != nil && r.err == nil && r.filePkts > 0 {
		_ = r.rotateLocked() // a failure is kept in r.err: the ring's next write reports it
	}
	return names, size, nil
}
