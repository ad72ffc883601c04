package integration

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/podcap/podcap/test/testbed"
)

// buildPlugin builds cmd/kubectl-podcap into a temporary directory and returns its path.
func buildPlugin(t *testing.T, c *testbed.Cluster) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kubectl-podcap")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/kubectl-podcap")
	cmd.Dir = c.RepoRoot
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build kubectl-podcap: %v\n%s", err, out)
	}
	return bin
}

// pluginUser is a ServiceAccount the plugin runs as, through a kubeconfig with its token (a
// bearer token, as a user's kubeconfig holds one).
type pluginUser struct {
	Name       string
	Namespace  string
	Token      string
	Kubeconfig string
}

// newPluginUser creates ServiceAccount ns/name with rules granted by a Role in each
// namespace of grants, and a kubeconfig (default namespace ns) with a token for it; all is
// deleted when the test ends.
func newPluginUser(t *testing.T, c *testbed.Cluster, ns, name string, grants map[string][]rbacv1.PolicyRule) *pluginUser {
	t.Helper()
	ctx := t.Context()
	admin := c.Admin()
	for _, n := range append([]string{ns}, keys(grants)...) {
		if err := c.EnsureNamespace(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cleanups := []func(context.Context) error{func(ctx context.Context) error {
		return admin.CoreV1().ServiceAccounts(ns).Delete(ctx, name, metav1.DeleteOptions{})
	}}
	for gns, rules := range grants {
		role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "plugin-" + name, Namespace: gns}, Rules: rules}
		binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "plugin-" + name, Namespace: gns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}}
		if _, err := admin.RbacV1().Roles(gns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.RbacV1().RoleBindings(gns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cleanups = append(cleanups, func(ctx context.Context) error {
			return errors.Join(admin.RbacV1().RoleBindings(gns).Delete(ctx, binding.Name, metav1.DeleteOptions{}),
				admin.RbacV1().Roles(gns).Delete(ctx, role.Name, metav1.DeleteOptions{}))
		})
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, f := range cleanups {
			if err := f(ctx); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete plugin user %s: %v", name, err)
			}
		}
	})
	expiry := int64(3600)
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", name, err)
	}
	u := &pluginUser{Name: name, Namespace: ns, Token: tr.Status.Token, Kubeconfig: filepath.Join(t.TempDir(), name+".kubeconfig")}
	if err := writeTokenKubeconfig(c, u); err != nil {
		t.Fatal(err)
	}
	return u
}

// writeTokenKubeconfig writes u's kubeconfig: the test bed's API server (and its CA) from the
// admin kubeconfig, u's token.
func writeTokenKubeconfig(c *testbed.Cluster, u *pluginUser) error {
	admin, err := clientcmd.LoadFromFile(c.AdminKubeconfig)
	if err != nil {
		return err
	}
	cluster := admin.Clusters[admin.Contexts[admin.CurrentContext].Cluster]
	kc := clientcmdapi.NewConfig()
	kc.Clusters["bed"] = cluster
	kc.AuthInfos[u.Name] = &clientcmdapi.AuthInfo{Token: u.Token}
	kc.Contexts["plugin"] = &clientcmdapi.Context{Cluster: "bed", AuthInfo: u.Name, Namespace: u.Namespace}
	kc.CurrentContext = "plugin"
	return clientcmd.WriteToFile(*kc, u.Kubeconfig)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// pluginResult is what a run of the plugin printed and how it exited.
type pluginResult struct {
	Stdout, Stderr string
	Code           int
}

// runPlugin runs the plugin binary with the user's kubeconfig, bounded by a minute.
func runPlugin(t *testing.T, bin string, u *pluginUser, args ...string) pluginResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", u.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := pluginResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.Code = exit.ExitCode()
	case err != nil:
		t.Fatalf("kubectl-podcap %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("kubectl-podcap %s: exit %d\n%s%s", strings.Join(args, " "), res.Code, res.Stdout, res.Stderr)
	return res
}

// Rules of the plugin's users.
var (
	// in the agents' namespace: find the agents and port-forward to them (a WebSocket
	// upgrade is authorised as get, SPDY's POST as create)
	reachAgentRules = []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, Verbs: []string{"get", "create"}},
	}
	// in a workload namespace: find a pod's node, read its captures, start and stop them
	captureRules = []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"pods/capture"}, Verbs: []string{"get"}},
	}
)
