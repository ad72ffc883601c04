package podcap_test

import data.podcap

test_kube_system_never_captured if {
	d := podcap.decision with input as pod("kube-system", {"podcap.io/capture": "true"}, {"podcap.io/debug-until": "2026-03-01T12:10:00Z"})
	d.capture == false
	startswith(d.reason, "denied: ")
	not podcap.manual_allowed with input as pod("kube-system", {}, {})
}

test_deny_list_can_be_extended if {
	not podcap.manual_allowed with input as pod("payments", {}, {})
		with podcap.denied_namespaces as {"kube-system", "payments"}
	podcap.manual_allowed with input as pod("kube-system", {}, {})
		with podcap.denied_namespaces as {"payments"}
}

test_other_namespaces_allowed if {
	podcap.manual_allowed with input as pod("default", {}, {})
	podcap.manual_allowed with input as pod("kube-system-2", {}, {})
}
