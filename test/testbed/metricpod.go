package testbed

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// DefaultMetricPort is the port a MetricPod serves /metrics on unless told otherwise.
const DefaultMetricPort = 8080

// MetricPodOptions shape a MetricPod.
type MetricPodOptions struct {
	Port    int                // default DefaultMetricPort
	Metrics map[string]float64 // served from the start; more with SetMetric
	Labels  map[string]string  // the pod's labels
	// Mutate, if set, edits the pod last (PodOptions.Mutate).
	Mutate func(*corev1.Pod)
}

// MetricPod is a workload pod whose busybox httpd serves, at http://<pod IP>:<port>/metrics,
// gauges in Prometheus's text format that the test sets (SetMetric). The host reaches pod IPs
// through the CNI bridge, so a Prometheus of the test scrapes it directly (ScrapeTarget).
type MetricPod struct {
	Pod  *corev1.Pod // as it was once running: Status.PodIP is set
	Port int

	c *Cluster
}

// metricName is what SetMetric accepts: a classic Prometheus metric name (it is a file name
// in the pod too).
var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// metricPodScript runs in the pod: sh -c SCRIPT metricpod PORT [NAME VALUE]...
// Every metric is a file /www/m/NAME holding its line; /www/metrics is their concatenation,
// replaced by rename so that a scrape never reads half of it.
const metricPodScript = `set -e
port=$1; shift
mkdir -p /www/m
while [ $# -ge 2 ]; do echo "$1 $2" >"/www/m/$1"; shift 2; done
cat /www/m/* >/www/.metrics 2>/dev/null || : >/www/.metrics
mv /www/.metrics /www/metrics
exec httpd -f -p "$port" -h /www`

// setMetricScript runs through kubectl exec: sh -c SCRIPT set NAME VALUE.
const setMetricScript = `set -e
echo "$1 $2" >"/www/m/$1"
cat /www/m/* >/www/.metrics
mv /www/.metrics /www/metrics`

// StartMetricPod creates a MetricPod in namespace ns (created if needed), waits until it runs
// and serves its metrics, and deletes it when the test ends.
func (c *Cluster) StartMetricPod(t testing.TB, ns, name string, opts MetricPodOptions) *MetricPod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	port := opts.Port
	if port == 0 {
		port = DefaultMetricPort
	}
	cmd := []string{"sh", "-c", metricPodScript, "metricpod", strconv.Itoa(port)}
	for _, n := range slices.Sorted(maps.Keys(opts.Metrics)) {
		if !metricName.MatchString(n) {
			t.Fatalf("metric pod %s/%s: metric name %q", ns, name, n)
		}
		cmd = append(cmd, n, formatValue(opts.Metrics[n]))
	}
	if err := c.EnsureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePod(ctx, ns, name, PodOptions{Command: cmd, Labels: opts.Labels, Mutate: opts.Mutate}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
		defer cancel()
		if err := c.DeletePod(ctx, ns, name); err != nil {
			t.Errorf("metric pod: %v", err)
		}
	})
	pod, err := c.WaitPodRunning(ctx, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	m := &MetricPod{Pod: pod, Port: port, c: c}
	// httpd listens a moment after the container started
	var last error
	err = poll(ctx, func(ctx context.Context) (bool, error) {
		_, last = httpDo(ctx, http.MethodGet, m.URL(), nil)
		return last == nil, nil
	}, "metric pod %s/%s serving %s", ns, name, m.URL())
	if err != nil {
		t.Fatalf("%v (last: %v)", err, last)
	}
	return m
}

// Address is <pod IP>:<port>.
func (m *MetricPod) Address() string {
	return net.JoinHostPort(m.Pod.Status.PodIP, strconv.Itoa(m.Port))
}

// URL is http://<pod IP>:<port>/metrics.
func (m *MetricPod) URL() string { return "http://" + m.Address() + "/metrics" }

// ScrapeTarget is the pod as a Prometheus target whose series carry the labels namespace and
// pod, so that alerts on them name the pod as a kube-prometheus alert would.
func (m *MetricPod) ScrapeTarget() ScrapeTarget {
	return ScrapeTarget{Address: m.Address(), Labels: map[string]string{"namespace": m.Pod.Namespace, "pod": m.Pod.Name}}
}

// SetMetric sets gauge name to value (adding it if new); the next scrape sees it.
func (m *MetricPod) SetMetric(ctx context.Context, name string, value float64) error {
	if !metricName.MatchString(name) {
		return fmt.Errorf("metric pod %s/%s: metric name %q", m.Pod.Namespace, m.Pod.Name, name)
	}
	_, err := m.c.Kubectl(ctx, "exec", "-n", m.Pod.Namespace, m.Pod.Name, "-c", WorkloadContainer, "--",
		"sh", "-c", setMetricScript, "set", name, formatValue(value))
	if err != nil {
		return fmt.Errorf("metric pod %s/%s: set %s: %w", m.Pod.Namespace, m.Pod.Name, name, err)
	}
	return nil
}

// Metric reads name from the pod's /metrics, as Prometheus would scrape it.
func (m *MetricPod) Metric(ctx context.Context, name string) (float64, error) {
	return ScrapeMetric(ctx, m.URL(), name, nil)
}

// formatValue writes v as the text format does (1, 0.5, +Inf, NaN).
func formatValue(v float64) string {
	return strconv.FormatFloat(v, 'g', -1, 64)
}
