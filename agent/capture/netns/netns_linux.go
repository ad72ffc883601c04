package netns

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/podcap/podcap/agent/capture"
)

// ErrNodeNetwork refuses a target that turns out to be in the node's network namespace while
// the pod is not a hostNetwork pod (a reused PID, a runtime that reports the wrong process):
// the capture would record the whole node's traffic.
var ErrNodeNetwork = errors.New("the target process is in the node's network namespace, not the pod's; " +
	"refusing to capture the whole node's traffic for a pod without hostNetwork")

// ErrWrongNetNS refuses a PID target whose network namespace is not its sandbox's: the PID
// was reused since the runtime reported it, or the runtime reported the wrong process.
var ErrWrongNetNS = errors.New("the container's process is not in its sandbox's network namespace (pid reused?)")

// ID identifies a namespace: the device and inode of its nsfs file.
type ID struct{ dev, ino uint64 }

// StatID returns the identity of the namespace file at path.
func StatID(path string) (ID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return ID{}, err
	}
	return ID{st.Dev, st.Ino}, nil
}

// Self returns the identity of the agent's own network namespace (its main thread's): with
// hostNetwork, the node's. Engines read it once, when they are made.
func Self() (ID, error) { return StatID("/proc/self/ns/net") }

func fileID(f *os.File) (ID, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return ID{}, err
	}
	return ID{st.Dev, st.Ino}, nil
}

// Open opens the network namespace to capture t in and checks it: it is a network namespace
// (nsfs, CLONE_NEWNET), the node's only for a hostNetwork pod, and for a PID target its
// sandbox's. The caller enters the returned file itself (nsenter inherits it, or setns on
// its descriptor), never a path again, so what was checked is what is entered: a path cannot
// be swapped and a PID cannot be reused in between.
//
// node is the node's network namespace (the agent runs with hostNetwork), read when the
// engine was made.
func Open(t capture.Target, netnsDir string, node ID, hostNetwork bool) (*os.File, error) {
	f, err := openTarget(t, netnsDir)
	if err != nil {
		return nil, err
	}
	id, err := checkNetNS(f)
	if err == nil && id == node && !hostNetwork {
		err = ErrNodeNetwork
	}
	if err == nil && t.NodeNetwork && id != node {
		err = fmt.Errorf("%s is not the node's network namespace", f.Name())
	}
	if err == nil && t.NetNSPath == "" && !t.NodeNetwork && t.SandboxPID > 0 && t.SandboxPID != t.PID {
		err = sameAsSandbox(id, t.SandboxPID)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openTarget opens t's network namespace file: the pinned file (confined to netnsDir) when
// the runtime reports one, else the node's own for a hostNetwork pod, else the PID's.
func openTarget(t capture.Target, netnsDir string) (*os.File, error) {
	switch {
	case t.NetNSPath != "":
		name, err := Name(netnsDir, t.NetNSPath)
		if err != nil {
			return nil, err
		}
		root, err := os.OpenRoot(netnsDir)
		if err != nil {
			return nil, fmt.Errorf("netns directory: %w", err)
		}
		defer root.Close()
		f, err := root.Open(name)
		if err != nil {
			return nil, fmt.Errorf("open netns %s: %w", t.NetNSPath, err)
		}
		return f, nil
	case t.NodeNetwork:
		return os.Open("/proc/self/ns/net")
	case t.PID > 0:
		// needs hostPID: the runtime reports host PIDs
		return os.Open("/proc/" + strconv.Itoa(t.PID) + "/ns/net")
	case t.PID < 0:
		return nil, fmt.Errorf("target pid %d: negative", t.PID)
	default:
		return nil, errors.New("target has neither a netns path nor a pid")
	}
}

// checkNetNS checks that f is a network namespace (a runtime's file could be anything, and a
// pinned file whose bind mount did not reach the agent's mount namespace is an empty regular
// file) and returns its identity.
func checkNetNS(f *os.File) (ID, error) {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
		return ID{}, fmt.Errorf("statfs %s: %w", f.Name(), err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return ID{}, fmt.Errorf("%s is not a namespace file (filesystem type %#x, not nsfs): "+
			"is the runtime's netns directory mounted into the agent with mountPropagation HostToContainer?", f.Name(), fs.Type)
	}
	typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return ID{}, fmt.Errorf("namespace type of %s: %w", f.Name(), err)
	}
	if typ != unix.CLONE_NEWNET {
		return ID{}, fmt.Errorf("%s is not a network namespace (type %#x)", f.Name(), typ)
	}
	return fileID(f)
}

// sameAsSandbox checks that the namespace of the container's process (id, already open) is
// the one of its sandbox's process: the runtime reported both at once, so a container PID
// reused since then is in another namespace. (A pinned file needs no such check: it is the
// sandbox's namespace itself.)
func sameAsSandbox(id ID, sandboxPID int) error {
	sb, err := StatID("/proc/" + strconv.Itoa(sandboxPID) + "/ns/net")
	if err != nil {
		return fmt.Errorf("sandbox process' network namespace: %w", err)
	}
	if sb != id {
		return ErrWrongNetNS
	}
	return nil
}
