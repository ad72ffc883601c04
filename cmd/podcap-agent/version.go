package main

import (
	"fmt"
	"io"

	"github.com/podcap/podcap/agent/version"
)

// runVersion is `podcap-agent version`: it prints the build's one line (agent/version) and
// returns the exit status, 2 for arguments it does not take.
func runVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "podcap-agent version: takes no arguments, got %q\n", args)
		return 2
	}
	fmt.Fprintln(stdout, "podcap-agent", version.Get())
	return 0
}
