package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/spf13/cobra"
)

func newStreamCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "stream POD",
		Short: "Write a pod's running capture to stdout as a live pcap stream",
		Long: `Write the running capture of the pod to standard output as a pcap stream (file header, then
packets as they are captured), for Wireshark or tcpdump. It ends cleanly (exit 0) on Ctrl-C
or when the reader goes away; the agent cuts off a reader that falls too far behind (the
capture itself never waits), which ends the stream with an error.`,
		Example: `  kubectl podcap stream web | wireshark -k -i -
  kubectl podcap stream web -n shop | tcpdump -nr -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := o.env()
			if err != nil {
				return err
			}
			return env.stream(cmd.Context(), env.Namespace, args[0], env.IO.Out)
		},
	}
}

// stream copies the live capture of ns/pod to w until the capture ends, ctx is cancelled
// (SIGINT: not an error) or w stops accepting data (EPIPE: not an error either).
func (e *Env) stream(ctx context.Context, ns, pod string, w io.Writer) error {
	agent, err := e.agentOfPod(ctx, ns, pod, listsCapture(ns, pod))
	if err != nil {
		return err
	}
	err = e.withAgent(ctx, agent, func(c *agentClient) error {
		body, err := c.Stream(ctx, ns, pod)
		if err != nil {
			return err
		}
		defer body.Close()
		if _, err := io.Copy(w, body); err != nil {
			return fmt.Errorf("stream of %s/%s: %w", ns, pod, err)
		}
		return nil
	})
	if ctx.Err() != nil || errors.Is(err, syscall.EPIPE) {
		return nil
	}
	return err
}
