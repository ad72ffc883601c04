package capture

import (
	"errors"
	"fmt"
	"strings"
)

// ValidateRingBase checks that base is usable as a ring's file name for a ring of the
// given size: a single path element, not "." or "..", and short enough with its index.
func ValidateRingBase(base string, files int) error {
	switch {
	case base == "":
		return errors.New("ring base name is empty")
	case base == "." || base == "..":
		return fmt.Errorf("ring base name %q is not a file name", base)
	case strings.ContainsAny(base, "/\x00"):
		return fmt.Errorf("ring base name %q contains '/' or NUL", base)
	case len(RingFileName(base, files, max(files-1, 0))) > 255:
		return fmt.Errorf("ring base name %q is too long", base)
	}
	return nil
}

// RingFileName is tcpdump's name for file index of a ring of files files (-W): base followed
// by index, zero-padded to the width of files-1. With one file the width is 0 and index 0
// gives base itself; files <= 0 (no -W) gives base, base1, base2, ...
func RingFileName(base string, files, index int) string {
	width := 0
	for n := files - 1; n > 0; n /= 10 {
		width++
	}
	if width == 0 && index == 0 {
		return base
	}
	return fmt.Sprintf("%s%0*d", base, width, index)
}
