package plugin

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newVersionCommand is `kubectl podcap version`: the plugin's build, the line
// `podcap-agent version` prints for the agent's. It reads no kubeconfig and reaches no agent.
func newVersionCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the plugin's version, commit, build date and Go release",
		Example: `  kubectl podcap version`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "kubectl-podcap", o.Build)
			return err
		},
	}
}
