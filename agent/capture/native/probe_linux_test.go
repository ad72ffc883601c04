package native_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/podcap/podcap/agent/capture/native"
)

// TestNewRefusedWithoutPrivileges: an agent without CAP_NET_RAW or CAP_SYS_ADMIN gets no native
// engine, with the capability named, instead of captures that fail one by one. The test binary
// runs itself again under setpriv with the capability dropped.
func TestNewRefusedWithoutPrivileges(t *testing.T) {
	if os.Getenv("PODCAP_NATIVE_PROBE") != "" {
		if _, err := native.New(native.Config{}); err != nil {
			os.Stdout.WriteString("refused: " + err.Error() + "\n")
			return
		}
		os.Stdout.WriteString("built\n")
		return
	}
	needRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skipf("needs setpriv (util-linux): %v", err)
	}
	for cap, want := range map[string]string{"": "built", "net_raw": "CAP_NET_RAW", "sys_admin": "CAP_SYS_ADMIN"} {
		args := []string{os.Args[0], "-test.run=^TestNewRefusedWithoutPrivileges$", "-test.v=false"}
		if cap != "" {
			args = append([]string{"--inh-caps=-" + cap, "--bounding-set=-" + cap, "--"}, args...)
		} else {
			args = append([]string{"--"}, args...)
		}
		cmd := exec.Command(setpriv, args...)
		cmd.Env = append(os.Environ(), "PODCAP_NATIVE_PROBE=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("without %q: %v: %s", cap, err, out)
		}
		if !strings.Contains(string(out), want) {
			t.Errorf("without %q: %s; want %q", cap, out, want)
		}
		t.Logf("without %q: %s", cap, strings.SplitN(string(out), "\n", 2)[0])
	}
}
