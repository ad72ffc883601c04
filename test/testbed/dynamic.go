package testbed

import (
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// AgentRESTConfig is a client configuration with exactly the agent's rights (ClusterRole
// podcap-agent and, in podcap-system, Role podcap-agent-alerts), for clients other than the
// clientset AgentClient returns (the dynamic client of the CaptureAlert store).
func (c *Cluster) AgentRESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.AgentKubeconfig)
	if err != nil {
		return nil, fmt.Errorf("agent kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	return cfg, nil
}

// AgentDynamic is a dynamic client with exactly the agent's rights (AgentRESTConfig).
func (c *Cluster) AgentDynamic() (dynamic.Interface, error) {
	cfg, err := c.AgentRESTConfig()
	if err != nil {
		return nil, err
	}
	return dynamic.NewForConfig(cfg)
}

// AdminDynamic is a dynamic client with the admin's (system:masters) rights.
func (c *Cluster) AdminDynamic() (dynamic.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig)
	if err != nil {
		return nil, fmt.Errorf("admin kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	return dynamic.NewForConfig(cfg)
}
