package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
)

const testToken = "user-token-0123456789"

var testNow = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// fakeAgent stands in for one agent's API: a TLS server checking the bearer token.
type fakeAgent struct {
	srv       *httptest.Server
	node      string
	captures  []any             // the JSON items of GET /api/v1/captures
	files     map[string][]byte // "ns/pod/name" -> content
	decisions map[string]any    // "ns/pod" -> explanation
	forbidden map[string]bool   // namespaces answered with 403
	stream    func(w http.ResponseWriter, r *http.Request)

	mu       sync.Mutex // protects requests
	requests []string
}

func newFakeAgent(t *testing.T, node string) *fakeAgent {
	a := &fakeAgent{node: node, files: map[string][]byte{}, decisions: map[string]any{}, forbidden: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/captures", func(w http.ResponseWriter, r *http.Request) {
		ns := r.URL.Query().Get("namespace")
		if a.forbidden[ns] {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		out := []any{}
		for _, c := range a.captures {
			if ns == "" || c.(map[string]any)["namespace"] == ns {
				out = append(out, c)
			}
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("GET /api/v1/decisions/{ns}/{pod}", func(w http.ResponseWriter, r *http.Request) {
		if a.forbidden[r.PathValue("ns")] {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		d, ok := a.decisions[r.PathValue("ns")+"/"+r.PathValue("pod")]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error": "pod is not on this node"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(d)
	})
	mux.HandleFunc("GET /api/v1/captures/{ns}/{pod}/files/{name}", func(w http.ResponseWriter, r *http.Request) {
		b, ok := a.files[r.PathValue("ns")+"/"+r.PathValue("pod")+"/"+r.PathValue("name")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /api/v1/captures/{ns}/{pod}/stream", func(w http.ResponseWriter, r *http.Request) {
		if a.stream == nil {
			http.NotFound(w, r)
			return
		}
		a.stream(w, r)
	})
	a.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.requests = append(a.requests, r.URL.RequestURI())
		a.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// fakeForwarder "forwards" to the fake agent of the pod's node.
type fakeForwarder struct {
	agents map[string]*fakeAgent // by node
}

var _ Forwarder = (*fakeForwarder)(nil)

func (f *fakeForwarder) Forward(_ context.Context, pod *corev1.Pod, port int) (string, func(), error) {
	a, ok := f.agents[pod.Spec.NodeName]
	if !ok || port != 9696 {
		return "", nil, context.DeadlineExceeded
	}
	return strings.TrimPrefix(a.srv.URL, "https://"), func() {}, nil
}

func agentPod(node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "podcap-agent-" + node, Namespace: DefaultAgentNamespace,
			Labels: map[string]string{"app.kubernetes.io/name": "podcap", "app.kubernetes.io/component": "agent"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "agent",
			Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9695}, {Name: "api", ContainerPort: 9696}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func workloadPod(ns, name, node string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: corev1.PodSpec{NodeName: node}}
}

// testEnv is a cluster of fake agents (one per node) and pods, and the streams the commands
// write to.
type testEnv struct {
	kube   *fake.Clientset
	agents map[string]*fakeAgent
	out    *bytes.Buffer
	errOut *bytes.Buffer
}

func newTestEnv(t *testing.T, nodes []string, pods ...runtime.Object) *testEnv {
	te := &testEnv{agents: map[string]*fakeAgent{}}
	for _, n := range nodes {
		te.agents[n] = newFakeAgent(t, n)
		pods = append(pods, agentPod(n))
	}
	te.kube = fake.NewClientset(pods...)
	return te
}

// run runs the plugin with args in namespace "shop" (the kubeconfig's, unless -n) and
// returns its error.
func (te *testEnv) run(t *testing.T, args ...string) error {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	te.out, te.errOut = out, errOut
	o := &Options{Config: genericclioptions.NewConfigFlags(false), IO: streams}
	o.NewEnv = func(o *Options) (*Env, error) {
		env := te.env(t)
		hc, err := NewHTTPClientFactory(&rest.Config{BearerToken: testToken}, o.AgentCAFile, "test")
		if err != nil {
			return nil, err
		}
		if ns := *o.Config.Namespace; ns != "" {
			env.Namespace = ns
		}
		env.HTTPClient, env.AgentNamespace, env.AgentServerName, env.IO = hc, o.AgentNamespace, o.AgentServerName, streams
		return env, nil
	}
	cmd := NewCommand(o)
	cmd.SetArgs(args)
	return cmd.ExecuteContext(t.Context())
}

var deleteOpts = metav1.DeleteOptions{}

// env is the Env the commands of te get (namespace "shop"), for calling its methods directly.
func (te *testEnv) env(t *testing.T) *Env {
	t.Helper()
	hc, err := NewHTTPClientFactory(&rest.Config{BearerToken: testToken}, "", "test")
	if err != nil {
		t.Fatal(err)
	}
	streams, _, _, _ := genericiooptions.NewTestIOStreams()
	return &Env{Kube: te.kube, Forwarder: &fakeForwarder{agents: te.agents}, HTTPClient: hc, Namespace: "shop",
		AgentNamespace: DefaultAgentNamespace, IO: streams, Now: func() time.Time { return testNow }}
}

func mustFactory(t *testing.T, token string) HTTPClientFactory {
	t.Helper()
	hc, err := NewHTTPClientFactory(&rest.Config{BearerToken: token}, "", "test")
	if err != nil {
		t.Fatal(err)
	}
	return hc
}

func forbidden() error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "web", errors.New("RBAC: no"))
}
