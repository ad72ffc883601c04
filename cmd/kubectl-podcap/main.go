// Command kubectl-podcap is podcap's kubectl plugin: `kubectl podcap ls|get|stream|explain|
// start|stop|version` (package plugin has the commands). On PATH, kubectl runs it as `kubectl podcap`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/podcap/podcap/agent/version"
	"github.com/podcap/podcap/cmd/kubectl-podcap/internal/plugin"
)

func main() {
	// SIGPIPE: writes to a closed stdout return EPIPE (stream ends cleanly) instead of killing
	// the process; SIGINT and SIGTERM cancel the context.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	io := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	o := &plugin.Options{Config: genericclioptions.NewConfigFlags(true), IO: io, Build: version.Get()}
	if err := plugin.NewCommand(o).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		stop()
		os.Exit(1)
	}
}
