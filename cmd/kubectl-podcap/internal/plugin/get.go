package plugin

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

func newGetCommand(o *Options) *cobra.Command {
	var opts getOptions
	cmd := &cobra.Command{
		Use:   "get POD",
		Short: "Download a pod's capture files",
		Long: `Download the ring files of the pod's capture, oldest first, into a directory (each file
written under a temporary name and renamed when complete), or with --merge as one pcap file
POD.pcap (POD-ID.pcap with --capture): the packets of all files in time order under one header. Files of different link
types are not merged, nor are pcapng files (download them and use Wireshark's mergecap).
A file the agent rotated away between the listing and its download is skipped with a warning.
A pod with several captures (e.g. a flight recorder and a policy capture: 'ls -o wide' shows
their IDs) needs --capture ID.`,
		Example: `  kubectl podcap get web                   # ./capture-web.pcap0, ...
  kubectl podcap get web -n shop -o /tmp/web
  kubectl podcap get web --merge && tcpdump -nr web.pcap`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := o.env()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(opts.dir, 0o755); err != nil {
				return fmt.Errorf("output directory: %w", err)
			}
			paths, err := env.download(cmd.Context(), env.Namespace, args[0], opts)
			for _, p := range paths {
				fmt.Fprintln(env.IO.Out, p)
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&opts.dir, "output", "o", ".", "directory to write the files to")
	cmd.Flags().BoolVar(&opts.merge, "merge", false, "write one pcap file, POD.pcap, with the packets of all files in time order")
	cmd.Flags().StringVar(&opts.id, "capture", "", "the capture's ID, when the pod has several")
	return cmd
}

// getOptions are get's flags.
type getOptions struct {
	dir   string
	merge bool
	id    string // of the capture; "" for the pod's only one
}

// download writes the files of ns/pod's capture into dir (or merges them into dir/POD.pcap)
// and returns the paths written.
func (e *Env) download(ctx context.Context, ns, pod string, opts getOptions) ([]string, error) {
	agent, err := e.agentOfPod(ctx, ns, pod, listsCapture(ns, pod))
	if err != nil {
		return nil, err
	}
	var paths []string
	err = e.withAgent(ctx, agent, func(c *agentClient) error {
		files, err := captureFiles(ctx, c, ns, pod, opts)
		if err != nil {
			return err
		}
		if !opts.merge {
			for _, name := range files {
				p, err := e.fetch(ctx, c, ns, pod, name, opts.dir)
				if err != nil {
					return err
				}
				if p != "" {
					paths = append(paths, p)
				}
			}
			return nil
		}
		out := pod + ".pcap"
		if opts.id != "" {
			out = pod + "-" + opts.id + ".pcap"
		}
		if !plainFileName(out) {
			return fmt.Errorf("--capture %q: not a capture ID", opts.id)
		}
		p, err := e.fetchMerged(ctx, c, ns, pod, files, opts.dir, out)
		if p != "" {
			paths = append(paths, p)
		}
		return err
	})
	return paths, err
}

// captureFiles returns the names of the files of ns/pod's capture (the one with opts.id, or
// the pod's only one) in ring order, checked to be plain file names (an agent's answer never
// chooses where the plugin writes).
func captureFiles(ctx context.Context, c *agentClient, ns, pod string, opts getOptions) ([]string, error) {
	caps, err := c.Captures(ctx, ns)
	if err != nil {
		return nil, err
	}
	var found []Capture
	var ids []string
	for _, cp := range caps {
		if cp.Pod == pod && (opts.id == "" || cp.ID == opts.id) {
			found = append(found, cp)
			ids = append(ids, dash(cp.ID))
		}
	}
	switch {
	case len(found) == 0 && opts.id != "":
		return nil, fmt.Errorf("no capture %q of pod %s/%s on node %s ('kubectl podcap ls -o wide' lists the IDs)", opts.id, ns, pod, c.node)
	case len(found) == 0:
		// the agent lists only the captures of namespaces the caller may read
		return nil, fmt.Errorf("no capture of pod %s/%s on node %s that you may read (reading captures in namespace %s needs get pods/capture)",
			ns, pod, c.node, ns)
	case len(found) > 1:
		return nil, fmt.Errorf("pod %s/%s has %d captures (%s): choose one with --capture", ns, pod, len(found), strings.Join(ids, ", "))
	}
	cp := found[0]
	if cp.Files == nil {
		return nil, fmt.Errorf("the podcap agent on node %s does not list capture files (it predates the retrieval API)", c.node)
	}
	if opts.merge && cp.Format == "pcapng" {
		return nil, ErrPcapng
	}
	var names []string
	for _, f := range cp.Files {
		if !plainFileName(f.Name) {
			return nil, fmt.Errorf("the agent on node %s names a capture file %q: not a plain file name", c.node, f.Name)
		}
		names = append(names, f.Name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("the capture of pod %s/%s has no files yet", ns, pod)
	}
	return names, nil
}

func plainFileName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, `/\`+"\x00") &&
		filepath.Base(name) == name
}

// fetch downloads one file to dir/name (temp + rename) and returns its path; "" with a
// warning if the agent no longer has it.
func (e *Env) fetch(ctx context.Context, c *agentClient, ns, pod, name, dir string) (string, error) {
	body, err := c.File(ctx, ns, pod, name)
	if IsNotFound(err) {
		fmt.Fprintf(e.IO.ErrOut, "warning: %s of %s/%s is gone (rotated away since the listing): skipped\n", name, ns, pod)
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer body.Close()
	path := filepath.Join(dir, name)
	if err := writeAtomic(path, func(w io.Writer) error { _, err := io.Copy(w, body); return err }); err != nil {
		return "", fmt.Errorf("download %s: %w", name, err)
	}
	return path, nil
}

// fetchMerged downloads the files into temporary files of dir and merges them into
// dir/name.
func (e *Env) fetchMerged(ctx context.Context, c *agentClient, ns, pod string, names []string, dir, name string) (string, error) {
	tmp, err := os.MkdirTemp(dir, ".podcap-"+pod+"-*")
	if err != nil {
		return "", fmt.Errorf("merge: %w", err)
	}
	defer os.RemoveAll(tmp)
	var parts []string
	for _, name := range names {
		p, err := e.fetch(ctx, c, ns, pod, name, tmp)
		if err != nil {
			return "", err
		}
		if p != "" {
			parts = append(parts, p)
		}
	}
	out := filepath.Join(dir, name)
	err = writeAtomic(out, func(w io.Writer) error {
		var files []io.Reader
		for _, p := range parts {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			files = append(files, f)
		}
		res, err := MergePcap(w, files...)
		for _, i := range res.Truncated {
			fmt.Fprintf(e.IO.ErrOut, "warning: %s ends in a partial packet (still being written): left out\n", filepath.Base(parts[i]))
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("merge: %w", err)
	}
	return out, nil
}

// writeAtomic writes path by way of a temporary file in its directory, renamed over path only
// when write succeeded; files are 0600 (they hold other people's traffic).
func writeAtomic(path string, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.part")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
