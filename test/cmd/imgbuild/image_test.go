package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// readImage returns the layer's entries (name -> header) and the image config of tarball p.
func readImage(t *testing.T, p, ref string) (map[string]tar.Header, []string, []string, []string) {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(p, &tag)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = *h
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return got, cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.Env
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "agent")
	conf := filepath.Join(dir, "passwd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("root:x:0:0::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := options{
		Ref: "podcap.local/test:1",
		Files: []fileSpec{
			{Host: bin, Image: "/usr/local/bin/agent"},
			{Host: conf, Image: "/etc/passwd"},
		},
		Symlinks:   []symlinkSpec{{Path: "/lib/libx.so.1", Target: "libx.so.1.2.3"}},
		Env:        []string{"FOO=bar"},
		Entrypoint: []string{"/usr/local/bin/agent"},
		Cmd:        []string{"--flag"},
	}

	tests := []struct {
		name    string
		mutate  func(*options)
		wantErr bool
	}{
		{name: "files, symlink, config"},
		{name: "relative image path", mutate: func(o *options) { o.Files[0].Image = "bin/agent" }, wantErr: true},
		{name: "same path twice", mutate: func(o *options) { o.Symlinks[0].Path = "/etc/passwd" }, wantErr: true},
		{name: "missing host file", mutate: func(o *options) { o.Files[0].Host = filepath.Join(dir, "nope") }, wantErr: true},
		{name: "busybox not in image", mutate: func(o *options) { o.BusyboxLinks = "/bin/busybox" }, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			o.Files = slices.Clone(base.Files)
			o.Symlinks = slices.Clone(base.Symlinks)
			o.Out = filepath.Join(t.TempDir(), "img.tar")
			if tc.mutate != nil {
				tc.mutate(&o)
			}
			res, err := build(o)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, ep, cmd, env := readImage(t, o.Out, o.Ref)
			if h := got["usr/local/bin/agent"]; h.Typeflag != tar.TypeReg || h.Mode != 0o755 {
				t.Errorf("agent: %+v", h)
			}
			if h := got["etc/passwd"]; h.Typeflag != tar.TypeReg || h.Mode != 0o644 {
				t.Errorf("passwd: %+v", h)
			}
			if h := got["lib/libx.so.1"]; h.Typeflag != tar.TypeSymlink || h.Linkname != "libx.so.1.2.3" {
				t.Errorf("symlink: %+v", h)
			}
			for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/", "lib/", "proc/", "dev/", "sys/"} {
				if h := got[d]; h.Typeflag != tar.TypeDir {
					t.Errorf("dir %s missing", d)
				}
			}
			if h := got["tmp/"]; h.Mode != 0o1777 {
				t.Errorf("tmp mode %o", h.Mode)
			}
			if !slices.Equal(ep, o.Entrypoint) || !slices.Equal(cmd, o.Cmd) {
				t.Errorf("entrypoint %q cmd %q", ep, cmd)
			}
			if !slices.Equal(env, []string{defaultPath, "FOO=bar"}) {
				t.Errorf("env %q", env)
			}
			// identical inputs, identical digest
			o.Out = filepath.Join(t.TempDir(), "again.tar")
			again, err := build(o)
			if err != nil {
				t.Fatal(err)
			}
			if again.Digest != res.Digest {
				t.Errorf("digest changed: %s then %s", res.Digest, again.Digest)
			}
		})
	}
}

func TestBusyboxLinks(t *testing.T) {
	const host = "/bin/busybox"
	if _, err := os.Stat(host); err != nil {
		t.Skipf("no %s on this host (Debian: busybox-static)", host)
	}
	dir := t.TempDir()
	nsenter := filepath.Join(dir, "nsenter")
	if err := os.WriteFile(nsenter, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := options{
		Ref: "podcap.local/bb:1", Out: filepath.Join(dir, "bb.tar"),
		Files:        []fileSpec{{Host: host, Image: "/bin/busybox"}, {Host: nsenter, Image: "/bin/nsenter"}},
		BusyboxLinks: "/bin/busybox", BusyboxHost: host,
	}
	if _, err := build(o); err != nil {
		t.Fatal(err)
	}
	got, _, _, _ := readImage(t, o.Out, o.Ref)
	if h := got["bin/sh"]; h.Typeflag != tar.TypeSymlink || h.Linkname != "/bin/busybox" {
		t.Errorf("bin/sh: %+v", h)
	}
	if h := got["bin/nsenter"]; h.Typeflag != tar.TypeReg {
		t.Errorf("an explicit file must win over the applet link: %+v", h)
	}
}
