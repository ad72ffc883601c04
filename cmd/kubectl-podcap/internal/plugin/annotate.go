package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// AnnotationKey is the annotation that asks for a manual capture (the agent's
// --annotation-key default): its value is the ring's number of files.
const AnnotationKey = "tcpdump.antrea.io"

// maxFiles is the largest ring any agent accepts (its --max-files is at most 1024).
const maxFiles = 1024

func newStartCommand(o *Options) *cobra.Command {
	files := 3
	cmd := &cobra.Command{
		Use:   "start POD",
		Short: "Ask for a manual capture of a pod (sets the annotation " + AnnotationKey + ")",
		Long: `Set the annotation ` + AnnotationKey + `: "N" on the pod, with your own credentials (you need
patch pods): the agent of its node then captures it into a ring of N files, if the capture
policy allows manual captures of the pod ('kubectl podcap explain POD' says).`,
		Example: `  kubectl podcap start web
  kubectl podcap start web -n shop --files 10`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if files < 1 || files > maxFiles {
				return fmt.Errorf("--files must be from 1 to %d, not %d", maxFiles, files)
			}
			env, err := o.env()
			if err != nil {
				return err
			}
			if err := env.annotate(cmd.Context(), env.Namespace, args[0], new(strconv.Itoa(files))); err != nil {
				return err
			}
			fmt.Fprintf(env.IO.Out, "pod/%s: capture requested (%s=%d)\n", args[0], AnnotationKey, files)
			return nil
		},
	}
	cmd.Flags().IntVar(&files, "files", files, "number of files of the capture's ring (the agent's --max-files bounds it)")
	return cmd
}

func newStopCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "stop POD",
		Short: "End a manual capture of a pod (removes the annotation " + AnnotationKey + ")",
		Long: `Remove the annotation ` + AnnotationKey + ` from the pod (you need patch pods): the agent stops
the manual capture and deletes its files. A capture the policy or an alert started is not
affected.`,
		Example: `  kubectl podcap stop web -n shop`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := o.env()
			if err != nil {
				return err
			}
			if err := env.annotate(cmd.Context(), env.Namespace, args[0], nil); err != nil {
				return err
			}
			fmt.Fprintf(env.IO.Out, "pod/%s: capture request removed\n", args[0])
			return nil
		},
	}
}

// annotate sets (value non-nil) or removes the capture annotation of ns/pod with a JSON
// merge patch.
func (e *Env) annotate(ctx context.Context, ns, pod string, value *string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]*string{AnnotationKey: value}}})
	if err != nil {
		return fmt.Errorf("patch: %w", err)
	}
	_, err = e.Kube.CoreV1().Pods(ns).Patch(ctx, pod, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-podcap"})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("pod %s/%s not found", ns, pod)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("you may not annotate pod %s/%s: ask for patch pods in namespace %s (%w)", ns, pod, ns, err)
	case err != nil:
		return fmt.Errorf("annotate pod %s/%s: %w", ns, pod, err)
	}
	return nil
}
