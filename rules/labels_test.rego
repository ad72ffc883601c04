package podcap_test

import data.podcap

test_label_captures_five_files_of_1mb if {
	d := podcap.decision with input as pod("default", {"podcap.io/capture": "true"}, {})
	d == {"capture": true, "reason": "label podcap.io/capture=true", "files": 5, "file_size_bytes": 1000000}
}

test_label_other_value_no_capture if {
	not podcap.decision with input as pod("default", {"podcap.io/capture": "false"}, {})
	not podcap.decision with input as pod("default", {"podcap.io/capture": "True"}, {})
}

test_annotation_is_not_a_label if {
	not podcap.decision with input as pod("default", {}, {"podcap.io/capture": "true"})
}

test_label_never_captures_nothing if {
	d := podcap.decision with input as pod("default", {"podcap.io/capture": "never"}, {})
	d.capture == false
	not podcap.manual_allowed with input as pod("default", {"podcap.io/capture": "never"}, {})
}
