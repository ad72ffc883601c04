# Tests of core.rego, the composition of the rule files. Run with the other files of rules/:
# `opa test rules/` or `go test ./policy/`.
package podcap_test

import data.podcap

now := "2026-03-01T12:00:00Z"

# pod is the input of a pod of namespace ns with the given labels and annotations.
pod(ns, labels, annotations) := {
	"node": "node-1",
	"now": now,
	"pod": {
		"namespace": ns,
		"name": "web-0",
		"uid": "00000000-0000-0000-0000-000000000001",
		"labels": labels,
		"annotations": annotations,
		"phase": "Running",
		"hostNetwork": false,
		"ip": "10.0.0.7",
		"owner": {"kind": "StatefulSet", "name": "web"},
	},
	"alerts": [],
	"manual": {"requested": false, "files": 0, "error": ""},
}

test_no_rule_applies_no_decision if {
	not podcap.decision with input as pod("default", {"app": "web"}, {})
	podcap.manual_allowed with input as pod("default", {}, {})
}

test_highest_priority_wins if {
	d := podcap.decision with input as pod("default", {"podcap.io/capture": "true", "podcap.io/capture-dns": "true"}, {})
	d.capture
	d.reason == "label podcap.io/capture-dns=true"
	d.filter == "udp port 53 or tcp port 53"
	not d.priority
}

test_deny_beats_every_candidate if {
	d := podcap.decision with input as pod("kube-system", {"podcap.io/capture": "true"}, {})
	d == {"capture": false, "reason": "denied: namespace kube-system is on the deny list of namespace-deny.rego"}
}

test_deny_vetoes_manual if {
	not podcap.manual_allowed with input as pod("kube-system", {}, {})
}

test_equal_priorities_pick_one if {
	d := podcap.decision with input as pod("default", {}, {})
		with podcap.captures as {
			{"priority": 1, "reason": "b", "files": 2},
			{"priority": 1, "reason": "a", "files": 3},
			{"priority": 0, "reason": "0", "files": 1},
		}
	d == {"capture": true, "reason": "a", "files": 3}
}
