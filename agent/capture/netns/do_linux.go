package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs f on a new goroutine whose OS thread entered the network namespace of nsFile, and
// returns f's error. The thread never leaves the namespace and is never given back: the
// goroutine ends locked to it, so the runtime ends the thread with it. Never on the process'
// main thread, which the runtime cannot end: a goroutine exiting locked to it leaves it parked
// for good in the namespace, keeping a pod's namespace alive and making /proc/self/ns/net
// (Self, the node's namespace to the engines) the pod's. What f makes there (a socket) keeps
// the namespace; using it needs no particular thread.
func Do(nsFile *os.File, f func() error) error {
	done := make(chan error, 1)
	go do(nsFile, f, done)
	return <-done
}

func do(nsFile *os.File, f func() error, done chan<- error) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// hold the main thread, so that the runtime starts the retry on another one
		retry := make(chan error, 1)
		go do(nsFile, f, retry)
		err := <-retry
		runtime.UnlockOSThread() // the main thread never left the node's namespace
		done <- err
		return
	}
	// No UnlockOSThread from here on, on purpose: see Do.
	if err := unix.Setns(int(nsFile.Fd()), unix.CLONE_NEWNET); err != nil {
		done <- fmt.Errorf("enter network namespace %s: %w", nsFile.Name(), err)
		return
	}
	done <- f()
}
