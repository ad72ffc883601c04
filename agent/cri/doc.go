// Package cri finds a pod's network namespace through the Container Runtime Interface
// (k8s.io/cri-api, runtime service v1) of containerd or CRI-O, over the runtime's unix socket.
//
// The lookup is pod labels → newest READY sandbox → a RUNNING container in it → verbose
// ContainerStatus for the container's host PID, and verbose PodSandboxStatus for the
// sandbox's network namespace path. The verbose "info" JSON is not part of the CRI contract;
// what podcap reads of it, and how containerd and CRI-O differ, is described in info.go.
//
// Client implements capture.Resolver. critest holds an in-memory runtime for tests.
package cri
