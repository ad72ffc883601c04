package integration

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/podcap/podcap/test/testbed"
)

// TestAgentVersion: the agent the test bed builds (version testbed.AgentVersion through
// -ldflags) names its version in its start log and exports podcap_build_info with it.
func TestAgentVersion(t *testing.T) {
	c := testBed(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	a := c.StartAgent(t)
	if err := a.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.MetricsURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v", resp.Status, err)
	}
	series := regexp.MustCompile(`(?m)^podcap_build_info\{commit="([^"]+)",goversion="go[^"]+",version="` +
		regexp.QuoteMeta(testbed.AgentVersion) + `"\} 1$`)
	m := series.FindStringSubmatch(string(body))
	if m == nil {
		t.Fatalf("no podcap_build_info of version %s in /metrics:\n%s", testbed.AgentVersion, grepLines(string(body), "podcap_build_info"))
	}
	log := a.Log()
	for _, want := range []string{`"Starting podcap agent"`, `version="` + testbed.AgentVersion + `"`, `commit="` + m[1] + `"`, `goVersion="go`} {
		if !strings.Contains(grepLines(log, "Starting podcap agent"), want) {
			t.Errorf("start log without %s:\n%s", want, grepLines(log, "Starting podcap agent"))
		}
	}
}

// grepLines are the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
