package integration

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcap/podcap/test/testbed"
)

// The API the Kubernetes way, on the real API server: a ServiceAccount bound to a Role that
// grants get pods/capture in namespace A (its token from the TokenRequest API), and a user
// with a client certificate of the cluster's CA in a group bound the same way, read A's
// decisions and captures and get 403 for namespace B; the captures list shows them only A's,
// while the cluster admin (system:masters, client certificate) sees both. No token and a
// garbage token get 401. The reader downloads a file of A identical to the one on disk and
// gets 403 for B's. Removing the RoleBinding takes the grant away within the cache time.
func TestAPIAuthorization(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	const nsA, nsB, reader, group = "podcap-auth-a", "podcap-auth-b", "capture-reader", "podcap-auth-readers"
	opts := testbed.PodOptions{Annotations: map[string]string{annotation: "2"}}
	runningPod(t, c, nsA, "web", opts)
	runningPod(t, c, nsB, "web", opts)
	grantCaptureReaders(t, c, nsA, reader, group)
	tr, err := c.Admin().CoreV1().ServiceAccounts(nsA).CreateToken(ctx, reader,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := tr.Status.Token

	caFile := filepath.Join(c.RunDir, "pki", "ca.crt")
	a := startAgent(t, c, "--api-client-ca-file="+caFile)
	plain := apiClient(t, a)
	admin := withClientCert(t, plain, clientCertFiles(t, filepath.Join(c.RunDir, "pki", "admin")))
	jane := withClientCert(t, plain, issueClientCert(t, c, "jane", group))

	// the admin sees both captures once they run: B's exists, for the reader's list to leave out
	waitFor(t, 60*time.Second, "the captures of both namespaces in the admin's list", func() (bool, error) {
		code, body, _ := get(t, admin, a.APIURL("/api/v1/captures"), "")
		return code == http.StatusOK && slices.Contains(listedNamespaces(t, body), nsA) && slices.Contains(listedNamespaces(t, body), nsB), nil
	})
	for _, tc := range []struct {
		name   string
		client *http.Client
		token  string
		path   string
		want   int
		body   string // part of the answer
	}{
		{"token: decision in A", plain, token, "/api/v1/decisions/" + nsA + "/web", 200, `"namespace": "` + nsA + `"`},
		{"token: decision in B", plain, token, "/api/v1/decisions/" + nsB + "/web", 403, `cannot get pods/capture in namespace \"` + nsB + `\"`},
		{"token: list narrowed to B", plain, token, "/api/v1/captures?namespace=" + nsB, 403, "pods/capture"},
		{"certificate: decision in A", jane, "", "/api/v1/decisions/" + nsA + "/web", 200, `"pod": "web"`},
		{"certificate: decision in B", jane, "", "/api/v1/decisions/" + nsB + "/web", 403, `user \"jane\"`},
		{"admin certificate: decision in B", admin, "", "/api/v1/decisions/" + nsB + "/web", 200, `"namespace": "` + nsB + `"`},
		{"no credentials", plain, "", "/api/v1/captures", 401, "no credentials"},
		{"garbage token", plain, "garbage-" + strings.Repeat("x", 40), "/api/v1/decisions/" + nsA + "/web", 401, "refused"},
		{"garbage token with a good certificate", jane, "garbage", "/api/v1/decisions/" + nsA + "/web", 401, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, header := get(t, tc.client, a.APIURL(tc.path), tc.token)
			if code != tc.want || !strings.Contains(body, tc.body) {
				t.Fatalf("%d %s, want %d with %q", code, body, tc.want, tc.body)
			}
			if code == http.StatusUnauthorized && !strings.HasPrefix(header.Get("WWW-Authenticate"), "Bearer ") {
				t.Fatalf("401 without a Bearer challenge: %q", header.Get("WWW-Authenticate"))
			}
		})
	}
	for name, client := range map[string]*http.Client{"token": plain, "certificate": jane} {
		tok := map[string]string{"token": token}[name]
		code, body, _ := get(t, client, a.APIURL("/api/v1/captures"), tok)
		if got := listedNamespaces(t, body); code != http.StatusOK || !slices.Equal(slices.Compact(got), []string{nsA}) {
			t.Errorf("%s: list %d %s: namespaces %q, want only %s", name, code, body, got, nsA)
		}
	}

	// a file of A downloads byte for byte with the reader's token; B's file is 403. The pod
	// sends nothing but two pings: its file stops moving, so the download must equal it
	quiet := runningPod(t, c, nsA, "quiet", testbed.PodOptions{Command: []string{"sleep", "3600"}, Annotations: map[string]string{annotation: "2"}})
	first := waitFilePackets(t, a, quiet, "capture-quiet.pcap0", func() { ping(t, c, quiet, 100) })
	waitFor(t, 30*time.Second, "the download of "+first+" to equal the file on disk", func() (bool, error) {
		before, err := os.ReadFile(first)
		if err != nil {
			return false, err
		}
		code, body, _ := get(t, plain, a.APIURL("/api/v1/captures/"+nsA+"/quiet/files/capture-quiet.pcap0"), token)
		after, err := os.ReadFile(first)
		if code != http.StatusOK || err != nil {
			return false, fmt.Errorf("download: %d %.200s (%v)", code, body, err)
		}
		return body == string(before) && bytes.Equal(before, after), nil
	})
	if code, body, _ := get(t, plain, a.APIURL("/api/v1/captures/"+nsB+"/web/files/capture-web.pcap0"), token); code != http.StatusForbidden {
		t.Errorf("download of B's file with A's reader token: %d %.200s, want 403", code, body)
	}

	// the grant goes: within the allowed cache time (10 s) plus RBAC's propagation, 403
	if err := c.Admin().RbacV1().RoleBindings(nsA).Delete(ctx, "podcap-capture-reader", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	waitFor(t, 30*time.Second, "403 after the RoleBinding was deleted", func() (bool, error) {
		code, _, _ := get(t, plain, a.APIURL("/api/v1/decisions/"+nsA+"/web"), token)
		return code == http.StatusForbidden, nil
	})
	t.Logf("grant gone after %s", time.Since(revoked).Round(100*time.Millisecond))

	m := scrapeCounters(t, a, "podcap_api_authorizations_total", "podcap_api_authentications_total")
	for series, atLeast := range map[string]float64{
		`podcap_api_authorizations_total{result="allowed"}`:          4,
		`podcap_api_authorizations_total{result="denied"}`:           4,
		`podcap_api_authentications_total{result="ok"}`:              8,
		`podcap_api_authentications_total{result="unauthenticated"}`: 3,
	} {
		if m[series] < atLeast {
			t.Errorf("%s = %v, want at least %v (all: %v)", series, m[series], atLeast, m)
		}
	}
	for _, series := range []string{`podcap_api_authorizations_total{result="error"}`, `podcap_api_authentications_total{result="error"}`} {
		if v, ok := m[series]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0 and pre-initialised", series, v, ok)
		}
	}
	lintMetrics(t, a)
}

// grantCaptureReaders makes ServiceAccount reader in ns, and Role + RoleBinding
// podcap-capture-reader (as deploy/examples/capture-reader.yaml) granting get pods/capture in
// ns to it and to group; it waits until the API server's authorizer says yes.
func grantCaptureReaders(t *testing.T, c *testbed.Cluster, ns, reader, group string) {
	t.Helper()
	ctx := t.Context()
	admin := c.Admin()
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: reader}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	meta := metav1.ObjectMeta{Name: "podcap-capture-reader", Namespace: ns}
	t.Cleanup(func() { // the test bed outlives the test: leave no grant behind
		ctx := context.Background()
		for _, err := range []error{
			admin.RbacV1().RoleBindings(ns).Delete(ctx, meta.Name, metav1.DeleteOptions{}),
			admin.RbacV1().Roles(ns).Delete(ctx, meta.Name, metav1.DeleteOptions{}),
			admin.CoreV1().ServiceAccounts(ns).Delete(ctx, reader, metav1.DeleteOptions{}),
		} {
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("clean up the grant: %v", err)
			}
		}
	})
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods/capture"}, Verbs: []string{"get"}},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: meta,
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: meta.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: reader, Namespace: ns}, {Kind: "Group", APIGroup: rbacv1.GroupName, Name: group}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the Role's grant effective", func() (bool, error) {
		sar, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: "system:serviceaccount:" + ns + ":" + reader, Groups: []string{"system:serviceaccounts"},
			ResourceAttributes: &authzv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "pods", Subresource: "capture", Name: "web"},
		}}, metav1.CreateOptions{})
		return err == nil && sar.Status.Allowed, err
	})
}

func get(t *testing.T, client *http.Client, url, token string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func listedNamespaces(t *testing.T, body string) []string {
	t.Helper()
	var items []struct{ Namespace string }
	if err := json.Unmarshal([]byte(body), &items); err != nil {
		return nil // not a list (an error answer): the caller's check fails on it
	}
	var out []string
	for _, it := range items {
		out = append(out, it.Namespace)
	}
	return out
}

// withClientCert is client presenting cert.
func withClientCert(t *testing.T, client *http.Client, cert tls.Certificate) *http.Client {
	t.Helper()
	tr := client.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	return &http.Client{Timeout: client.Timeout, Transport: tr}
}

// clientCertFiles loads base.crt and base.key (the test bed's PKI).
func clientCertFiles(t *testing.T, base string) tls.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(base+".crt", base+".key")
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// issueClientCert signs a client certificate CN=user, O=group with the cluster's CA: a user
// the API server would take too.
func issueClientCert(t *testing.T, c *testbed.Cluster, user, group string) tls.Certificate {
	t.Helper()
	ca := clientCertFiles(t, filepath.Join(c.RunDir, "pki", "ca"))
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: user, Organization: []string{group}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// scrapeCounters reads the agent's /metrics and returns the series of the families named, by
// `name{labels}` as the text format writes them.
func scrapeCounters(t *testing.T, a *testbed.AgentProcess, families ...string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(a.MetricsURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || !slices.ContainsFunc(families, func(f string) bool { return strings.HasPrefix(series, f+"{") }) {
			continue
		}
		var v float64
		if err := json.Unmarshal([]byte(value), &v); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		out[series] = v
	}
	return out
}

// --metrics-require-auth on the real API server: /metrics leaves the plain port for the HTTPS
// one, where a ServiceAccount bound to a ClusterRole with nonResourceURLs [/metrics] reads it
// and one without gets 403; health stays open.
func TestAPIMetricsRequireAuth(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	const ns, scraper, idle = "podcap-auth-metrics", "scraper", "idle"
	if err := c.EnsureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	admin := c.Admin()
	tokens := map[string]string{}
	for _, sa := range []string{scraper, idle} {
		if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = admin.CoreV1().ServiceAccounts(ns).Delete(context.Background(), sa, metav1.DeleteOptions{})
		})
		tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tokens[sa] = tr.Status.Token
	}
	const role = "podcap-test-metrics-reader"
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.RbacV1().ClusterRoles().Delete(context.Background(), role, metav1.DeleteOptions{}) })
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: scraper, Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), role, metav1.DeleteOptions{})
	})

	a := startAgent(t, c, "--metrics-require-auth")
	client := apiClient(t, a)
	if code, body, _ := get(t, http.DefaultClient, a.MetricsURL(), ""); code != http.StatusNotFound || !strings.Contains(body, "--metrics-require-auth") {
		t.Errorf("plain /metrics: %d %s, want 404 saying where it went", code, body)
	}
	if code, _, _ := get(t, http.DefaultClient, a.URL("/healthz"), ""); code != http.StatusOK {
		t.Errorf("/healthz: %d, want 200 without credentials", code)
	}
	if code, _, _ := get(t, client, a.APIURL("/metrics"), ""); code != http.StatusUnauthorized {
		t.Errorf("HTTPS /metrics without a token: %d, want 401", code)
	}
	if code, body, _ := get(t, client, a.APIURL("/metrics"), tokens[idle]); code != http.StatusForbidden || !strings.Contains(body, "cannot get /metrics") {
		t.Errorf("HTTPS /metrics by a ServiceAccount without the ClusterRole: %d %s, want 403", code, body)
	}
	// the binding may take a moment to reach the API server's authorizer; a denial is cached 5 s
	waitFor(t, 30*time.Second, "the scraper reading /metrics", func() (bool, error) {
		code, body, _ := get(t, client, a.APIURL("/metrics"), tokens[scraper])
		return code == http.StatusOK && strings.Contains(body, `podcap_api_authorizations_total{result="allowed"}`), nil
	})
}
