package policy

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Input is what a policy sees as `input`. The JSON field names are the contract with policy
// authors; [Input.Value] builds the same document for OPA without going through JSON.
type Input struct {
	// Node is the name of the node the agent runs on.
	Node string `json:"node"`
	// Now is the time of the evaluation, RFC 3339 in UTC. Policies must use it, not
	// time.now_ns(), so that `podcap-agent policy eval --now` reproduces a decision.
	Now time.Time `json:"now"`
	// Pod is the pod being decided on.
	Pod PodInput `json:"pod"`
	// Alerts are the active Alertmanager alerts; always a list, empty until the agent receives
	// alerts.
	Alerts []Alert `json:"alerts"`
	// Manual is the pod's manual capture request (the annotation), as the agent parsed it.
	Manual Manual `json:"manual"`
	// Limits are the node's limits a decision is checked against (the agent's flags), so
	// that a rule can stay within them rather than be refused.
	Limits InputLimits `json:"limits"`
}

// InputLimits are the node's limits as a policy sees them: `input.limits`.
type InputLimits struct {
	// MaxDurationSeconds is the longest max_duration the node accepts (--max-capture-duration)
	// in whole seconds, rounded down: a rule that writes "<n>s" with n at most this value is
	// never refused for its max_duration.
	MaxDurationSeconds int64 `json:"max_duration_seconds"`
	// MaxFiles and MaxFileSizeBytes are the largest ring (--max-files) and ring file
	// (--max-file-size-bytes) a decision may ask for.
	MaxFiles         int   `json:"max_files"`
	MaxFileSizeBytes int64 `json:"max_file_size_bytes"`
}

// inputLimits is what the input says of l, with DefaultLimits for its zero fields.
func inputLimits(l Limits) InputLimits {
	l = l.withDefaults()
	return InputLimits{MaxDurationSeconds: int64(l.MaxDuration / time.Second), MaxFiles: l.MaxFiles, MaxFileSizeBytes: l.MaxFileSizeBytes}
}

// PodInput is the part of a pod a policy sees. Labels and annotations are never null.
type PodInput struct {
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	UID         string            `json:"uid"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Phase       string            `json:"phase"`
	HostNetwork bool              `json:"hostNetwork"`
	IP          string            `json:"ip"`
	Owner       Owner             `json:"owner"`
}

// Owner is the pod's controller (its first owner reference if none is a controller); both
// fields are "" for a pod without owner.
type Owner struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// Alert is one Alertmanager alert, with the field names of Alertmanager's webhook payload.
type Alert struct {
	Fingerprint string            `json:"fingerprint"`
	Status      string            `json:"status"` // "firing" or "resolved"
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	// GeneratorURL links to what fired the alert (a Prometheus graph); "" when not sent.
	GeneratorURL string `json:"generatorURL"`
}

// Manual is the pod's manual capture request: the agent's annotation, parsed by the agent.
type Manual struct {
	// Requested is true when the pod carries the annotation, valid or not.
	Requested bool `json:"requested"`
	// Files is the ring size asked for, 0 when the annotation is absent or invalid.
	Files int `json:"files"`
	// Error says why the annotation is invalid; "" when it is valid or absent.
	Error string `json:"error"`
}

// lastApplied is kubectl's copy of the whole object it applied: never a policy criterion, and
// often the largest value of a pod, so the input leaves it out.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// BuildInput is the one place a policy input is built: from the pod, the node's name, the time
// of the evaluation, the parsed manual request, the active alerts and the node's limits (the
// ones its decisions are validated with; a zero field is DefaultLimits'). It copies what it
// keeps, so the pod may come from an informer's cache.
func BuildInput(pod *corev1.Pod, node string, now time.Time, manual Manual, alerts []Alert, limits Limits) Input {
	in := Input{
		Node:   node,
		Now:    now.UTC(),
		Alerts: make([]Alert, len(alerts)),
		Manual: manual,
		Limits: inputLimits(limits),
		Pod: PodInput{
			Namespace:   pod.Namespace,
			Name:        pod.Name,
			UID:         string(pod.UID),
			Labels:      copyMap(pod.Labels, ""),
			Annotations: copyMap(pod.Annotations, lastApplied),
			Phase:       string(pod.Status.Phase),
			HostNetwork: pod.Spec.HostNetwork,
			IP:          pod.Status.PodIP,
			Owner:       owner(pod.OwnerReferences),
		},
	}
	for i, a := range alerts {
		a.Labels = copyMap(a.Labels, "")
		a.Annotations = copyMap(a.Annotations, "")
		in.Alerts[i] = a
	}
	return in
}

// owner is the controller reference if there is one, else the first reference.
func owner(refs []metav1.OwnerReference) Owner {
	for _, r := range refs {
		if r.Controller != nil && *r.Controller {
			return Owner{Kind: r.Kind, Name: r.Name}
		}
	}
	if len(refs) > 0 {
		return Owner{Kind: refs[0].Kind, Name: refs[0].Name}
	}
	return Owner{}
}

// copyMap copies m without the key skip; never nil.
func copyMap(m map[string]string, skip string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		if k != skip {
			c[k] = v
		}
	}
	return c
}
