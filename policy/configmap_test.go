package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// configMapDir lays out files as the kubelet does in a ConfigMap volume (AtomicWriter): the
// data in a timestamped directory ..<ts>, the symbolic link ..data to it, and one top-level
// symbolic link per file into ..data. Each update writes a new ..<ts>, swaps ..data by rename
// (atomic), then adds and removes the top-level links and the old directory.
type configMapDir struct {
	t   *testing.T
	dir string
	gen int
	old map[string]bool // top-level names of the previous update
}

func newConfigMapDir(t *testing.T, files map[string]string) *configMapDir {
	c := &configMapDir{t: t, dir: t.TempDir(), old: map[string]bool{}}
	c.update(files)
	return c
}

func (c *configMapDir) update(files map[string]string) {
	t := c.t
	t.Helper()
	c.gen++
	ts := fmt.Sprintf("..2026_03_01_12_00_%02d.%09d", c.gen, c.gen)
	must(t, os.Mkdir(filepath.Join(c.dir, ts), 0o755))
	for name, text := range files {
		must(t, os.WriteFile(filepath.Join(c.dir, ts, name), []byte(text), 0o644))
	}
	oldTarget, _ := os.Readlink(filepath.Join(c.dir, "..data"))
	must(t, os.Symlink(ts, filepath.Join(c.dir, "..data_tmp")))
	must(t, os.Rename(filepath.Join(c.dir, "..data_tmp"), filepath.Join(c.dir, "..data")))
	for name := range files {
		if !c.old[name] {
			must(t, os.Symlink(filepath.Join("..data", name), filepath.Join(c.dir, name)))
		}
	}
	for name := range c.old {
		if _, ok := files[name]; !ok {
			must(t, os.Remove(filepath.Join(c.dir, name)))
		}
	}
	if oldTarget != "" {
		must(t, os.RemoveAll(filepath.Join(c.dir, oldTarget)))
	}
	c.old = map[string]bool{}
	for name := range files {
		c.old[name] = true
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// writeFiles writes plain files into dir, in place.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
	}
}

func mkdir(dir string) error { return os.Mkdir(dir, 0o755) }
