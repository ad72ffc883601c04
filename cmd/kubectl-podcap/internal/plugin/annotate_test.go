package plugin

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

func TestStartStop(t *testing.T) {
	te := getEnv(t)
	annotation := func() (string, bool) {
		p, err := te.kube.CoreV1().Pods("shop").Get(t.Context(), "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v, ok := p.Annotations[AnnotationKey]
		return v, ok
	}
	if err := te.run(t, "start", "web", "--files", "7"); err != nil {
		t.Fatal(err)
	}
	if v, _ := annotation(); v != "7" {
		t.Errorf("annotation %q, want 7", v)
	}
	if te.out.String() != "pod/web: capture requested (tcpdump.antrea.io=7)\n" {
		t.Errorf("output %q", te.out)
	}
	if err := te.run(t, "start", "web"); err != nil {
		t.Fatal(err)
	}
	if v, _ := annotation(); v != "3" {
		t.Errorf("annotation %q, want the default 3", v)
	}
	if err := te.run(t, "stop", "web"); err != nil {
		t.Fatal(err)
	}
	if v, ok := annotation(); ok {
		t.Errorf("annotation %q still there after stop", v)
	}
	var patches []string
	for _, a := range te.kube.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok {
			patches = append(patches, string(p.GetPatchType())+" "+string(p.GetPatch()))
		}
	}
	want := []string{
		`application/merge-patch+json {"metadata":{"annotations":{"tcpdump.antrea.io":"7"}}}`,
		`application/merge-patch+json {"metadata":{"annotations":{"tcpdump.antrea.io":"3"}}}`,
		`application/merge-patch+json {"metadata":{"annotations":{"tcpdump.antrea.io":null}}}`,
	}
	if strings.Join(patches, "\n") != strings.Join(want, "\n") {
		t.Errorf("patches:\n%s\nwant:\n%s", strings.Join(patches, "\n"), strings.Join(want, "\n"))
	}
}

func TestStartErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		args   []string
		forbid bool
		want   string
	}{
		"zero files":  {[]string{"start", "web", "--files", "0"}, false, "--files must be from 1 to 1024, not 0"},
		"many files":  {[]string{"start", "web", "--files", "1025"}, false, "--files must be from 1 to 1024"},
		"no pod":      {[]string{"stop", "nope"}, false, "pod shop/nope not found"},
		"no argument": {[]string{"start"}, false, "accepts 1 arg(s), received 0"},
		"forbidden":   {[]string{"start", "web"}, true, "you may not annotate pod shop/web: ask for patch pods in namespace shop"},
	} {
		t.Run(name, func(t *testing.T) {
			te := getEnv(t)
			if tc.forbid {
				te.kube.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, forbidden()
				})
			}
			err := te.run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}
