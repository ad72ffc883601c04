package netns

import (
	"errors"
	"fmt"
	"path/filepath"
)

// DefaultDir is where containerd and CRI-O pin pods' network namespaces by default.
const DefaultDir = "/var/run/netns"

// ErrPath refuses a network namespace path from the runtime that is not a file directly or
// indirectly under the netns directory.
var ErrPath = errors.New("netns path not under the netns directory")

// Name returns path relative to dir, the directory the runtime pins network namespaces in,
// or ErrPath: path must be clean and absolute (no "..", no "//") and name something below
// dir, not dir itself. It is only the lexical half of the confinement: Open then opens the
// file inside an os.Root of dir, so that no symbolic link leads out of it either.
func Name(dir, path string) (string, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return "", fmt.Errorf("%w: %q is not a clean absolute path", ErrPath, path)
	}
	rel, err := filepath.Rel(dir, path)
	if err != nil || rel == "." || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("%w: %q is not under %s (set --netns-dir to where the runtime pins network namespaces)", ErrPath, path, dir)
	}
	return rel, nil
}

// CheckDir checks the netns directory an engine is configured with: a clean absolute path.
func CheckDir(dir string) error {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
		return fmt.Errorf("netns directory %q: not a clean absolute path", dir)
	}
	return nil
}
