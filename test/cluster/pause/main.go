// Command pause is the test bed's stand-in for registry.k8s.io/pause (there is no registry
// here): PID 1 of every pod sandbox. It blocks, reaps zombies, and exits 0 on SIGINT/SIGTERM
// so that StopPodSandbox returns promptly. test/cluster/cluster.sh builds it statically;
// bump PAUSE_STAMP there when this file changes.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
