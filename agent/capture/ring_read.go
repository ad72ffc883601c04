package capture

import (
	"fmt"
	"os"
)

// OpenFile opens one of the ring's files (its name in the ring's directory) for reading.
// Buffered packets are written first, with the ring's lock held until the file is opened
// and its size read: that size ends on a whole record even while the ring is written. A
// name that is not one of the ring's files, or not a regular file, is ErrFileNotFound; a
// closed ring returns ErrRingClosed (open the file in its directory instead).
func (r *Ring) OpenFile(name string) (*os.File, os.FileInfo, error) {
	own := false
	for i := range r.files {
		own = own || RingFileName(r.base, r.files, i) == name
	}
	if !own {
		return nil, nil, fmt.Errorf("%s: %w", name, ErrFileNotFound)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, nil, ErrRingClosed
	}
	if r.err == nil {
		_ = r.flushLocked() // a failure is the ring's sticky error: the file holds what it holds
	}
	return openRegular(r.root, name)
}
