package podcap_test

import data.podcap

test_dns_label_captures_dns_only if {
	d := podcap.decision with input as pod("default", {"podcap.io/capture-dns": "true"}, {})
	d == {
		"capture": true,
		"reason": "label podcap.io/capture-dns=true",
		"files": 5,
		"file_size_bytes": 1000000,
		"snaplen": 1500,
		"filter": "udp port 53 or tcp port 53",
	}
}

test_dns_label_other_value_no_capture if {
	not podcap.decision with input as pod("default", {"podcap.io/capture-dns": "yes"}, {})
}

test_dns_denied_namespace if {
	d := podcap.decision with input as pod("kube-system", {"podcap.io/capture-dns": "true"}, {})
	not d.capture
}

test_dns_covers_udp_and_tcp if {
	d := podcap.decision with input as pod("default", {"podcap.io/capture-dns": "true"}, {})
	d.filter == "udp port 53 or tcp port 53"
}

test_dns_label_with_never_captures_nothing if {
	d := podcap.decision with input as pod("default", {"podcap.io/capture-dns": "true", "podcap.io/capture": "never"}, {})
	d.capture == false
	startswith(d.reason, "denied: label podcap.io/capture=never")
}
