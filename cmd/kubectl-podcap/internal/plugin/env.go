package plugin

import (
	"fmt"
	"time"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/podcap/podcap/agent/version"
)

// Env is what the commands work with: clients of the cluster and the agents, the namespace.
// NewEnv builds it from the kubeconfig flags; tests build it from fakes.
type Env struct {
	Kube            kubernetes.Interface
	Forwarder       Forwarder
	HTTPClient      HTTPClientFactory
	Namespace       string // -n, else the kubeconfig context's
	AgentNamespace  string
	AgentServerName string // "" : the agent pod's node name
	IO              genericiooptions.IOStreams
	Now             func() time.Time
}

// Options are the flags every command shares.
type Options struct {
	Config          *genericclioptions.ConfigFlags
	AgentNamespace  string
	AgentCAFile     string
	AgentServerName string
	Debug           bool
	IO              genericiooptions.IOStreams
	Build           version.Info // the plugin's build: `version` prints it, its Version goes in the user agent
	// NewEnv builds the Env once the flags are parsed; nil: the real one (newEnv).
	NewEnv func(*Options) (*Env, error)
}

func (o *Options) env() (*Env, error) {
	if o.NewEnv != nil {
		return o.NewEnv(o)
	}
	return newEnv(o)
}

// newEnv builds the Env of the plugin from the kubeconfig flags.
func newEnv(o *Options) (*Env, error) {
	cfg, err := o.Config.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "kubectl-podcap/" + o.Build.Version
	ns, _, err := o.Config.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig namespace: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	hc, err := NewHTTPClientFactory(cfg, o.AgentCAFile, cfg.UserAgent)
	if err != nil {
		return nil, err
	}
	return &Env{
		Kube: kube, Forwarder: NewPortForwarder(cfg, kube.CoreV1().RESTClient()), HTTPClient: hc,
		Namespace: ns, AgentNamespace: o.AgentNamespace, AgentServerName: o.AgentServerName,
		IO: o.IO, Now: time.Now,
	}, nil
}
