// Package agent is podcap's node controller: it watches the pods bound to this node, decides
// for each one whether a capture should run (the manual annotation today), and asks the
// capture manager to converge. It also serves health and metrics over plain HTTP, and its
// API, which takes bearer tokens, over HTTPS.
package agent
