package alerts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/podcap/podcap/agent/alerts"
)

// The receiver users paste (deploy/alertmanager/) is a configuration the real amtool accepts,
// pointed at the webhook's path, with max_alerts within the agent's bound and resolved alerts
// sent; the AlertmanagerConfig says the same.
func TestDeployedAlertmanagerReceiver(t *testing.T) {
	amtool, err := exec.LookPath("amtool")
	if err != nil {
		t.Fatalf("this test needs amtool (apt-get install -y prometheus-alertmanager): %v", err)
	}
	dir := filepath.Join("..", "..", "deploy", "alertmanager")
	receiver := filepath.Join(dir, "alertmanager-receiver.yaml")
	if out, err := exec.Command(amtool, "check-config", receiver).CombinedOutput(); err != nil {
		t.Fatalf("amtool check-config %s: %v\n%s", receiver, err, out)
	}
	for file, keys := range map[string][3]string{
		"alertmanager-receiver.yaml": {`max_alerts: (\d+)`, `send_resolved: true`, `url: https://podcap-webhook\.podcap-system\.svc:9696(\S+)`},
		"alertmanagerconfig.yaml":    {`maxAlerts: (\d+)`, `sendResolved: true`, `url: https://podcap-webhook\.podcap-system\.svc:9696(\S+)`},
	} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(keys[0]).FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no %s", file, keys[0])
		}
		if n, _ := strconv.Atoi(string(m[1])); n < 1 || n > alerts.DefaultMaxAlerts {
			t.Errorf("%s: max alerts %d, want 1..%d", file, n, alerts.DefaultMaxAlerts)
		}
		if !regexp.MustCompile(keys[1]).Match(b) {
			t.Errorf("%s: resolved alerts not sent", file)
		}
		if m := regexp.MustCompile(keys[2]).FindSubmatch(b); m == nil || string(m[1]) != alerts.WebhookPath {
			t.Errorf("%s: url path %q, want %s on Service podcap-webhook", file, m, alerts.WebhookPath)
		}
	}
}
