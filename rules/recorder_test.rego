package podcap_test

import data.podcap

test_recorder_label_records_two_files_of_1mb if {
	r := podcap.recorder with input as pod("default", {"podcap.io/recorder": "true"}, {})
	r == {"capture": true, "reason": "label podcap.io/recorder=true", "files": 2, "file_size_bytes": 1000000}
}

test_recorder_is_independent_of_the_capture_decision if {
	inp := pod("default", {"podcap.io/recorder": "true", "podcap.io/capture": "true"}, {})
	r := podcap.recorder with input as inp
	r.files == 2
	d := podcap.decision with input as inp
	d.reason == "label podcap.io/capture=true"
}

test_recorder_only_with_the_label if {
	not podcap.recorder with input as pod("default", {}, {})
	not podcap.recorder with input as pod("default", {"podcap.io/recorder": "True"}, {})
	not podcap.recorder with input as pod("default", {}, {"podcap.io/recorder": "true"})
	not podcap.decision with input as pod("default", {"podcap.io/recorder": "true"}, {})
}

test_recorder_denied_namespace if {
	not podcap.recorder with input as pod("kube-system", {"podcap.io/recorder": "true"}, {})
}

test_recorder_with_never_records_nothing if {
	not podcap.recorder with input as pod("default", {"podcap.io/recorder": "true", "podcap.io/capture": "never"}, {})
}
