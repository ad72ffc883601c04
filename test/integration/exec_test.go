package integration

import "os/exec"

// execCommand runs a host tool by name; never a shell.
func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
