package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"
)

func newExplainCommand(o *Options) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "explain POD",
		Short: "Show the capture policy's decision for a pod, and why",
		Long: `Show what the agent of the pod's node decides for it now: the policy's decision and reason,
the filter, ring, snaplen and engine it asks for, whether a manual request (the annotation) is
allowed, and the capture that runs. -o json or yaml print the agent's whole answer, with the
policy input it evaluated.`,
		Example: `  kubectl podcap explain web
  kubectl podcap explain web -n shop -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validOutput(output, "json", "yaml"); err != nil {
				return err
			}
			env, err := o.env()
			if err != nil {
				return err
			}
			raw, node, err := env.explain(cmd.Context(), env.Namespace, args[0])
			if err != nil {
				return err
			}
			if output != "" {
				var v any
				if err := json.Unmarshal(raw, &v); err != nil {
					return fmt.Errorf("decode explanation: %w", err)
				}
				return printData(env.IO.Out, output, v)
			}
			var ex Explanation
			if err := json.Unmarshal(raw, &ex); err != nil {
				return fmt.Errorf("decode explanation: %w", err)
			}
			return printExplanation(env.IO.Out, &ex, node, env.Now())
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml")
	return cmd
}

// explain returns the agent's explanation of ns/pod and the agent's node.
func (e *Env) explain(ctx context.Context, ns, pod string) (json.RawMessage, string, error) {
	agent, err := e.agentOfPod(ctx, ns, pod, explains(ns, pod))
	if err != nil {
		return nil, "", err
	}
	var raw json.RawMessage
	err = e.withAgent(ctx, agent, func(c *agentClient) (err error) {
		raw, err = c.Decision(ctx, ns, pod)
		return err
	})
	return raw, agent.Spec.NodeName, err
}

// printExplanation writes the human summary of an explanation.
func printExplanation(w io.Writer, ex *Explanation, node string, now time.Time) error {
	var b strings.Builder
	line := func(k, format string, args ...any) {
		fmt.Fprintf(&b, "%-10s "+format+"\n", append([]any{k + ":"}, args...)...)
	}
	line("Pod", "%s/%s (node %s)", ex.Namespace, ex.Pod, node)
	if ex.PolicyVersion != "" {
		line("Policy", "%s", ex.PolicyVersion)
	}
	switch d := ex.Decision; {
	case ex.Error != "":
		line("Decision", "none: %s", ex.Error)
	case d == nil:
		line("Decision", "none")
	case !d.Capture:
		line("Decision", "no capture (%s)", dash(d.Reason))
	default:
		line("Decision", "capture (%s)", dash(d.Reason))
		line("Files", "%d × %s", d.Files, humanBytes(uint64(max(d.FileSizeBytes, 0))))
		line("Filter", "%s", or(d.Filter, "(all traffic)"))
		line("Snaplen", "%s", snaplen(d.Snaplen))
		line("Engine", "%s", or(d.Engine, "(agent default)"))
		if d.Format != "" {
			line("Format", "%s", d.Format)
		}
		if d.MaxDuration != "" && d.MaxDuration != "0s" {
			line("Duration", "at most %s", d.MaxDuration)
		}
	}
	if in := ex.Input; in != nil && in.Manual.Requested {
		allowed := "unknown"
		if ex.ManualAllowed != nil {
			allowed = map[bool]string{true: "allowed", false: "not allowed by the policy"}[*ex.ManualAllowed]
		}
		line("Manual", "requested, %d files: %s", in.Manual.Files, allowed)
	} else if in != nil && in.Manual.Error != "" {
		line("Manual", "invalid request: %s", in.Manual.Error)
	}
	line("Capture", "%s", captureLine(ex.Capture, now))
	if ex.Recorder != nil || ex.RecorderCapture != nil || ex.RecorderError != "" {
		rec := "off"
		if ex.RecorderError != "" {
			rec = "error: " + ex.RecorderError
		} else if ex.Recorder != nil && ex.Recorder.Capture {
			rec = "on (" + dash(ex.Recorder.Reason) + ")"
		}
		line("Recorder", "%s; %s", rec, captureLine(ex.RecorderCapture, now))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func snaplen(n int) string {
	if n <= 0 {
		return "full packets"
	}
	return fmt.Sprintf("%d bytes", n)
}

// captureLine summarises a running capture.
func captureLine(c *CaptureStatus, now time.Time) string {
	if c == nil {
		return "none running"
	}
	s := fmt.Sprintf("%s (source %s, %d files, %d packets, %s, %d kernel drops", dash(c.Phase), dash(c.Source),
		c.Files, c.Packets, humanBytes(c.Bytes), c.KernelDrops)
	if c.Engine != "" {
		s += ", engine " + c.Engine
	}
	if !c.Started.IsZero() {
		s += ", started " + duration.HumanDuration(now.Sub(c.Started)) + " ago"
	}
	s += ")"
	if c.LastError != "" {
		s += "; last error: " + c.LastError
	}
	return s
}
