package podcap_test

import data.podcap

never := {"podcap.io/capture": "never"}

test_never_captures_nothing_and_says_why if {
	d := podcap.decision with input as pod("default", never, {})
	d == {"capture": false, "reason": "denied: label podcap.io/capture=never on the pod (opt-out.rego)"}
}

test_never_vetoes_the_manual_annotation if {
	not podcap.manual_allowed with input as pod("default", never, {})
	not podcap.manual_allowed with input as pod("default", {"podcap.io/capture": "Never"}, {})
}

test_never_any_case if {
	every v in ["never", "Never", "NEVER"] {
		d := podcap.decision with input as pod("default", {"podcap.io/capture": v, "podcap.io/capture-dns": "true"}, {})
		d.capture == false
	}
}

test_other_values_are_not_an_opt_out if {
	every v in ["false", "no", "never-ever", ""] {
		podcap.manual_allowed with input as pod("default", {"podcap.io/capture": v}, {})
		d := podcap.decision with input as pod("default", {"podcap.io/capture": v, "podcap.io/capture-dns": "true"}, {})
		d.capture
	}
}

test_never_as_an_annotation_is_not_an_opt_out if {
	podcap.manual_allowed with input as pod("default", {}, never)
}

test_never_with_another_deny_lists_both if {
	d := podcap.decision with input as pod("kube-system", never, {})
	d.reason == "denied: label podcap.io/capture=never on the pod (opt-out.rego); namespace kube-system is on the deny list of namespace-deny.rego"
}
