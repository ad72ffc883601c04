package agent

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// trimPod is the informer's transform: it keeps only the fields the agent reads, so the cache
// of a busy node stays small. Objects other than pods (deletion tombstones) pass unchanged.
func trimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	t := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              pod.Name,
			Namespace:         pod.Namespace,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			Labels:            pod.Labels,
			Annotations:       pod.Annotations,
			OwnerReferences:   pod.OwnerReferences,
			DeletionTimestamp: pod.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{
			NodeName:    pod.Spec.NodeName,
			HostNetwork: pod.Spec.HostNetwork,
		},
		Status: corev1.PodStatus{
			Phase:  pod.Status.Phase,
			PodIP:  pod.Status.PodIP,
			PodIPs: pod.Status.PodIPs,
		},
	}
	for _, cs := range pod.Status.ContainerStatuses {
		t.Status.ContainerStatuses = append(t.Status.ContainerStatuses, corev1.ContainerStatus{
			Name:         cs.Name,
			ContainerID:  cs.ContainerID,
			RestartCount: cs.RestartCount,
			Ready:        cs.Ready,
		})
	}
	return t, nil
}
