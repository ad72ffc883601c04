package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
)

func newLsCommand(o *Options) *cobra.Command {
	var all bool
	var output string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the captures on every node",
		Long: `List the captures of the namespace (-n, or your context's) or, with -A, of every namespace
you may read, asking every podcap agent (in parallel, through port-forwards).`,
		Example: `  kubectl podcap ls
  kubectl podcap ls -n shop -o wide
  kubectl podcap ls -A -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := validOutput(output, "json", "yaml", "wide"); err != nil {
				return err
			}
			env, err := o.env()
			if err != nil {
				return err
			}
			ns := env.Namespace
			if all {
				ns = ""
			}
			caps, err := env.listCaptures(cmd.Context(), ns)
			if len(caps) == 0 && (output == "" || output == "wide") {
				if err == nil { // as kubectl get: the message on stderr, nothing on stdout
					fmt.Fprintln(env.IO.ErrOut, noCaptures(ns))
				}
				return err
			}
			if perr := printCaptures(env.IO.Out, caps, output, env.Now()); perr != nil {
				return perr
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list the captures of every namespace you may read")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json, yaml or wide")
	return cmd
}

// listCaptures asks every agent for its captures in ns ("": all). It returns what the agents
// that answered said, sorted, and an error naming each agent that did not.
func (e *Env) listCaptures(ctx context.Context, ns string) ([]Capture, error) {
	agents, err := e.agentPods(ctx, "")
	if err != nil {
		return nil, err
	}
	if len(agents) == 0 {
		return nil, fmt.Errorf("no running podcap agents (pods %q in namespace %s; --agent-namespace to change)",
			AgentSelector, e.AgentNamespace)
	}
	var (
		caps []Capture
		errs []error
	)
	eachAgent(ctx, e, agents, func(ctx context.Context, c *agentClient) ([]Capture, error) {
		return c.Captures(ctx, ns)
	}, func(_ *corev1.Pod, got []Capture, err error) {
		caps = append(caps, got...)
		if err != nil {
			errs = append(errs, err)
		}
	})
	slices.SortFunc(caps, func(a, b Capture) int {
		return strings.Compare(a.Namespace+"/"+a.Pod+"/"+a.Node+"/"+a.ID, b.Namespace+"/"+b.Pod+"/"+b.Node+"/"+b.ID)
	})
	return caps, errors.Join(errs...)
}

func noCaptures(ns string) string {
	if ns == "" {
		return "No captures found."
	}
	return "No captures found in namespace " + ns + "."
}

// printCaptures writes the captures as a table (wide: with reason, alerts and filter), or as
// a JSON or YAML list.
func printCaptures(w io.Writer, caps []Capture, output string, now time.Time) error {
	if caps == nil {
		caps = []Capture{}
	}
	switch output {
	case "json", "yaml":
		return printData(w, output, caps)
	}
	tw := printers.GetNewTabWriter(w)
	cols := "NAMESPACE\tPOD\tNODE\tSOURCE\tSTATE\tFILES\tBYTES\tPACKETS\tDROPS\tAGE"
	if output == "wide" {
		cols += "\tID\tREASON\tALERTS\tFILTER"
	}
	fmt.Fprintln(tw, cols)
	for _, c := range caps {
		files := len(c.Files)
		if c.Files == nil {
			files = c.RingFiles
		}
		age := "<unknown>"
		if !c.Started.IsZero() {
			age = duration.HumanDuration(now.Sub(c.Started))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s", c.Namespace, c.Pod, c.Node, dash(c.Source),
			dash(c.State), files, humanBytes(c.Bytes), c.Packets, c.KernelDrops, age)
		if output == "wide" {
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s", dash(c.ID), dash(c.Reason), dash(strings.Join(c.Alerts, ",")), dash(c.Filter))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// humanBytes writes n in B, KiB, MiB, GiB with one decimal (kubectl-like brevity).
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGT"[exp])
}
