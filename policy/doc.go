// Package policy evaluates podcap's capture policies: Rego v1 files of package podcap that
// decide, for one pod at a time, whether the agent captures its traffic and how.
//
// The contract with policy authors (CONTRACT.md has the whole of it):
//
//   - the input is [Input], built only by [BuildInput]: the node, the time, the pod, the active
//     alerts, the manual annotation request and the node's limits (input.limits, so that a
//     rule can stay within them);
//   - the policy defines data.podcap.decision, decoded strictly into [Decision] (an undefined
//     decision is no capture; a wrong shape is an error naming the field), and may define
//     data.podcap.manual_allowed, a boolean veto of the manual annotation (default true);
//   - every decision is checked against the node's [Limits] by [Decision.Validate] before it
//     reaches a capture.
//
// An [Engine] loads the *.rego files (not *_test.rego) of one directory, as a ConfigMap mount
// presents them, compiles them strictly, prepares one query per policy version and shares it
// across goroutines. [Engine.Reload] swaps in a new version only if it compiles; [Engine.Run]
// polls the directory and reloads on change. The package imports no metrics library: the
// reload state is data ([Engine.Status]) for the caller to export.
package policy
