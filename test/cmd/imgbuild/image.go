package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// epoch is every entry's mtime and the image's creation time, so that identical inputs
// give an identical digest.
var epoch = time.Unix(0, 0).UTC()

// defaultDirs exist in every image: mount points the runtime expects, /etc and /tmp.
var defaultDirs = []string{"/dev", "/etc", "/proc", "/sys", "/tmp"}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type fileSpec struct{ Host, Image string }

type symlinkSpec struct{ Path, Target string }

// options describe one image.
type options struct {
	Ref, Out     string
	Files        []fileSpec
	Symlinks     []symlinkSpec
	Dirs         []string
	Env          []string
	BusyboxLinks string // busybox's path in the image; "" = no applet links
	BusyboxHost  string // busybox on this host, asked for its applet list
	Entrypoint   []string
	Cmd          []string
}

type result struct {
	Digest     v1.Hash
	Entries    int
	LayerBytes int
}

// entry is one tar entry of the layer, keyed by its clean absolute path.
type entry struct {
	hdr  tar.Header
	data []byte
}

// layer collects the entries of the single layer; write emits them sorted by path,
// which puts every directory before its contents.
type layer struct {
	entries map[string]*entry
}

func newLayer() *layer { return &layer{entries: map[string]*entry{}} }

func cleanPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("image path %q is not absolute", p)
	}
	c := path.Clean(p)
	if c == "/" {
		return "", fmt.Errorf("image path %q is the root", p)
	}
	return c, nil
}

// parents adds the missing parent directories of p.
func (l *layer) parents(p string) error {
	var todo []string
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		todo = append(todo, d)
	}
	for i := len(todo) - 1; i >= 0; i-- {
		if err := l.dir(todo[i]); err != nil {
			return err
		}
	}
	return nil
}

// dir adds directory p (no-op if present as a directory).
func (l *layer) dir(p string) error {
	if e, ok := l.entries[p]; ok {
		if e.hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%s: both a directory and a file or link", p)
		}
		return nil
	}
	if err := l.parents(p); err != nil {
		return err
	}
	mode := int64(0o755)
	if p == "/tmp" {
		mode = 0o1777
	}
	l.entries[p] = &entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(p, "/") + "/", Mode: mode, ModTime: epoch}}
	return nil
}

func (l *layer) add(p string, e *entry) error {
	if _, ok := l.entries[p]; ok {
		return fmt.Errorf("%s: added twice", p)
	}
	if err := l.parents(p); err != nil {
		return err
	}
	l.entries[p] = e
	return nil
}

// file copies host file hostPath (following symlinks) to image path p, keeping its permission bits.
func (l *layer) file(hostPath, p string) error {
	fi, err := os.Stat(hostPath)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", hostPath)
	}
	data, err := os.ReadFile(hostPath)
	if err != nil {
		return err
	}
	return l.add(p, &entry{
		hdr: tar.Header{
			Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"),
			Mode: int64(fi.Mode().Perm()), Size: int64(len(data)), ModTime: epoch,
		},
		data: data,
	})
}

func (l *layer) symlink(p, target string) error {
	return l.add(p, &entry{hdr: tar.Header{
		Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(p, "/"), Linkname: target, Mode: 0o777, ModTime: epoch,
	}})
}

// busyboxApplets lists the applets of the host's busybox.
func busyboxApplets(hostBusybox string) ([]string, error) {
	out, err := exec.Command(hostBusybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", hostBusybox, err)
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)
	return applets, nil
}

func (l *layer) write() ([]byte, error) {
	paths := make([]string, 0, len(l.entries))
	for p := range l.entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := l.entries[p]
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, fmt.Errorf("tar %s: %w", p, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	return buf.Bytes(), nil
}

// build assembles the image described by o and writes it to o.Out (atomically).
func build(o options) (result, error) {
	var res result
	l := newLayer()
	for _, d := range append(append([]string{}, defaultDirs...), o.Dirs...) {
		p, err := cleanPath(d)
		if err != nil {
			return res, err
		}
		if err := l.dir(p); err != nil {
			return res, err
		}
	}
	for _, f := range o.Files {
		p, err := cleanPath(f.Image)
		if err != nil {
			return res, err
		}
		if err := l.file(f.Host, p); err != nil {
			return res, fmt.Errorf("add file: %w", err)
		}
	}
	for _, s := range o.Symlinks {
		p, err := cleanPath(s.Path)
		if err != nil {
			return res, err
		}
		if err := l.symlink(p, s.Target); err != nil {
			return res, fmt.Errorf("add symlink: %w", err)
		}
	}
	if o.BusyboxLinks != "" {
		bb, err := cleanPath(o.BusyboxLinks)
		if err != nil {
			return res, err
		}
		if _, ok := l.entries[bb]; !ok {
			return res, fmt.Errorf("-busybox-links %s: not a file of the image", bb)
		}
		applets, err := busyboxApplets(o.BusyboxHost)
		if err != nil {
			return res, err
		}
		for _, a := range applets {
			p := "/bin/" + a
			if _, taken := l.entries[p]; taken || strings.Contains(a, "/") {
				continue // an explicit file wins over the applet
			}
			if err := l.symlink(p, bb); err != nil {
				return res, err
			}
		}
	}
	layerBytes, err := l.write()
	if err != nil {
		return res, err
	}
	img, err := assemble(layerBytes, o)
	if err != nil {
		return res, err
	}
	if res.Digest, err = img.Digest(); err != nil {
		return res, fmt.Errorf("image digest: %w", err)
	}
	if err := writeTarball(o.Out, o.Ref, img); err != nil {
		return res, err
	}
	res.Entries = len(l.entries)
	res.LayerBytes = len(layerBytes)
	return res, nil
}

func assemble(layerBytes []byte, o options) (v1.Image, error) {
	lay, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, lay)
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Env = []string{defaultPath}
	for _, e := range o.Env {
		if strings.HasPrefix(e, "PATH=") {
			cf.Config.Env[0] = e
			continue
		}
		cf.Config.Env = append(cf.Config.Env, e)
	}
	cf.Config.Entrypoint = o.Entrypoint
	cf.Config.Cmd = o.Cmd
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

func writeTarball(out, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("ref %q: %w", ref, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tarball.Write(tag, img, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
