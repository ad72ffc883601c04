package plugin

import (
	"testing"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/podcap/podcap/agent/version"
)

func TestVersionCommand(t *testing.T) {
	build := version.Info{Version: "v9.8.7", Commit: "0123abc", BuildDate: "2026-12-07T01:02:03Z", GoVersion: "go1.x"}
	for _, tc := range []struct {
		args    []string
		out     string
		wantErr bool
	}{
		{[]string{"version"}, "kubectl-podcap v9.8.7 (commit 0123abc, built 2026-12-07T01:02:03Z, go1.x)\n", false},
		{[]string{"version", "extra"}, "", true},
	} {
		t.Run(tc.args[len(tc.args)-1], func(t *testing.T) {
			streams, _, out, _ := genericiooptions.NewTestIOStreams()
			o := &Options{Config: genericclioptions.NewConfigFlags(false), IO: streams, Build: build,
				NewEnv: func(*Options) (*Env, error) { t.Fatal("version built an Env"); return nil, nil }}
			cmd := NewCommand(o)
			cmd.SetArgs(tc.args)
			err := cmd.ExecuteContext(t.Context())
			if (err != nil) != tc.wantErr || out.String() != tc.out {
				t.Fatalf("kubectl podcap %v: %v, output %q; want error %v, output %q", tc.args, err, out.String(), tc.wantErr, tc.out)
			}
		})
	}
}
