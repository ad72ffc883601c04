// Command imgbuild builds a single-layer linux/amd64 container image from files on this host,
// without a registry or a Docker daemon, and writes it as a docker-archive tarball that
// `ctr images import` accepts. The test bed (test/cluster/cluster.sh) builds the pause, workload
// and agent images with it. Identical inputs give an identical image digest.
//
//	imgbuild -ref podcap.local/pause:1 -out pause.tar -file bin/pause=/pause -entrypoint /pause
//	imgbuild -ref podcap.local/workload:1 -out workload.tar -file /bin/busybox=/bin/busybox \
//	    -busybox-links /bin/busybox -file traffic=/usr/local/bin/traffic -cmd '/usr/local/bin/traffic ping'
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imgbuild:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// listFlag is a flag that may repeat.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func run(args []string) error {
	var (
		o                  options
		files, links, envs listFlag
		dirs               listFlag
		entrypoint, cmd    string
	)
	fs := flag.NewFlagSet("imgbuild", flag.ContinueOnError)
	fs.StringVar(&o.Ref, "ref", "", "image reference to tag the image with (required)")
	fs.StringVar(&o.Out, "out", "", "docker-archive tarball to write (required)")
	fs.Var(&files, "file", "HOSTPATH=IMAGEPATH: copy a file (symlinks followed, mode kept); may repeat")
	fs.Var(&links, "symlink", "IMAGEPATH=TARGET: add a symbolic link; may repeat")
	fs.Var(&dirs, "dir", "IMAGEPATH: add an empty directory (0755; /tmp gets 01777); may repeat")
	fs.Var(&envs, "env", "NAME=VALUE: image environment (PATH has a default); may repeat")
	fs.StringVar(&o.BusyboxLinks, "busybox-links", "", "busybox binary's path in the image: add /bin/APPLET symlinks to it for every applet not otherwise present")
	fs.StringVar(&o.BusyboxHost, "busybox-host", "/bin/busybox", "busybox on this host, run with --list to learn the applets")
	fs.StringVar(&entrypoint, "entrypoint", "", "image entrypoint, space separated")
	fs.StringVar(&cmd, "cmd", "", "image cmd, space separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Ref == "" || o.Out == "" || fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("-ref and -out are required, no arguments: %w", flag.ErrHelp)
	}
	for _, f := range files {
		host, img, ok := strings.Cut(f, "=")
		if !ok || host == "" || img == "" {
			return fmt.Errorf("-file %q: want HOSTPATH=IMAGEPATH", f)
		}
		o.Files = append(o.Files, fileSpec{Host: host, Image: img})
	}
	for _, l := range links {
		p, target, ok := strings.Cut(l, "=")
		if !ok || p == "" || target == "" {
			return fmt.Errorf("-symlink %q: want IMAGEPATH=TARGET", l)
		}
		o.Symlinks = append(o.Symlinks, symlinkSpec{Path: p, Target: target})
	}
	for _, e := range envs {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("-env %q: want NAME=VALUE", e)
		}
	}
	o.Dirs = dirs
	o.Env = envs
	o.Entrypoint = strings.Fields(entrypoint)
	o.Cmd = strings.Fields(cmd)

	res, err := build(o)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s -> %s (%d entries, %d layer bytes)\n", o.Ref, res.Digest, o.Out, res.Entries, res.LayerBytes)
	return nil
}
