// Command podcap-agent is podcap's node agent: it captures the traffic of the pods on its node.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "podcap-agent: not wired yet")
	os.Exit(1)
}
