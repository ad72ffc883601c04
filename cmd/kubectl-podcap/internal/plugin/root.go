// Package plugin is kubectl-podcap, the kubectl plugin of podcap: it lists, downloads,
// streams and explains the captures of the podcap agents, reaching each agent through a
// port-forward of the API server with the user's own credentials, and starts and stops
// manual captures through the pod annotation.
package plugin

import (
	"cmp"
	"os"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

const rootLong = `Captures of pod traffic by podcap, the way kubectl works.

The agent of a pod's node is reached by port-forward through the API server (as
'kubectl port-forward' does) to its API port, and the request carries your own credentials
from your kubeconfig: the bearer token (also one from an exec or auth-provider plugin) and
your client certificate. The agent authorises you with the API server: to read the captures
of a namespace you need 'get pods/capture' there. The port-forward needs 'get'/'list' pods
and 'create' (SPDY) or 'get' (WebSocket) pods/portforward in the agents' namespace
(podcap-system). get/stream/explain find the pod's node with 'get pods' in its namespace,
or, if you may not, by asking every agent.

Without a bearer token in your kubeconfig (client certificates only), the agent accepts
you only if its operator let it verify client certificates against the cluster's client CA
(--api-client-ca-file on the agent); otherwise pass a token the API server can review,
for example --token="$(kubectl create token NAME)" of a ServiceAccount bound to those roles,
or use a kubeconfig user with an OIDC or exec plugin.

The agent's TLS certificate is verified only with --agent-ca-file (against
--agent-server-name, by default the agent's node name). Without it the plugin does not verify
it: the connection runs inside the port-forward tunnel, which your client opened to the API
server it authenticates and which the API server relays to the kubelet of the agent's node,
so no one else on the network is in between.`

const rootExample = `  kubectl podcap ls -A                        # every capture you may read, on every node
  kubectl podcap start web --files 5          # ask for a manual capture of pod web
  kubectl podcap get web -o /tmp/web          # download its ring, oldest file first
  kubectl podcap get web --merge              # ... as one pcap file, web.pcap
  kubectl podcap stream web | wireshark -k -i -
  kubectl podcap explain web                  # the policy decision for web, and why
  kubectl podcap stop web`

// NewCommand returns the root command, kubectl-podcap, with its subcommands.
func NewCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:           "kubectl-podcap",
		Short:         "List, download, stream and explain podcap's captures of pod traffic",
		Long:          rootLong,
		Example:       rootExample,
		SilenceErrors: true, // main prints the error once
		SilenceUsage:  true,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl podcap"},
	}
	cmd.SetIn(o.IO.In)
	cmd.SetOut(o.IO.Out)
	cmd.SetErr(o.IO.ErrOut)
	if o.AgentNamespace == "" {
		o.AgentNamespace = cmp.Or(os.Getenv(AgentNamespaceEnv), DefaultAgentNamespace)
	}
	flags := cmd.PersistentFlags()
	o.Config.AddFlags(flags)
	flags.StringVar(&o.AgentNamespace, "agent-namespace", o.AgentNamespace,
		"namespace of the podcap agents (default: env "+AgentNamespaceEnv+", else "+DefaultAgentNamespace+")")
	flags.StringVar(&o.AgentCAFile, "agent-ca-file", "", "verify the agents' TLS certificates against this CA bundle (PEM)")
	flags.StringVar(&o.AgentServerName, "agent-server-name", "",
		"name the agents' certificates must hold, with --agent-ca-file (default: the agent's node name)")
	flags.BoolVar(&o.Debug, "debug", false, "print client-go's own log (the port-forward's connection errors) to stderr")
	cmd.PersistentPreRun = func(*cobra.Command, []string) {
		if !o.Debug {
			// client-go's port-forward logs every connection it sees end (e.g. "Error copying
			// from local connection to remote stream" err="EOF" when Ctrl-C ends a stream) through
			// klog: noise for a command whose errors are its own.
			klog.SetLogger(logr.Discard())
		}
	}
	cmd.AddCommand(newLsCommand(o), newGetCommand(o), newStreamCommand(o), newExplainCommand(o),
		newStartCommand(o), newStopCommand(o), newVersionCommand(o))
	return cmd
}
