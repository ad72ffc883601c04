package podcap_test

import data.podcap

test_debug_until_future_captures_for_the_time_left if {
	d := podcap.decision with input as pod("default", {}, {"podcap.io/debug-until": "2026-03-01T12:10:00Z"})
	d == {
		"capture": true,
		"reason": "annotation podcap.io/debug-until=2026-03-01T12:10:00Z",
		"files": 5,
		"file_size_bytes": 1000000,
		"max_duration": "600s",
	}
}

test_debug_until_rounds_up_to_the_second if {
	d := podcap.decision with input as pod("default", {}, {"podcap.io/debug-until": "2026-03-01T12:00:00.2+00:00"})
	d.max_duration == "1s"
}

test_debug_until_other_time_zone if {
	d := podcap.decision with input as pod("default", {}, {"podcap.io/debug-until": "2026-03-01T13:30:00+01:00"})
	d.max_duration == "1800s"
}

test_debug_until_past_or_now_no_capture if {
	not podcap.decision with input as pod("default", {}, {"podcap.io/debug-until": "2026-03-01T11:59:59Z"})
	not podcap.decision with input as pod("default", {}, {"podcap.io/debug-until": now})
}

test_debug_until_not_a_time_no_capture if {
	not podcap.decision with input as pod("default", {}, {"podcap.io/debug-until": "tomorrow"})
	not podcap.decision with input as pod("default", {}, {"podcap.io/debug-until": "2026-03-01"})
	not podcap.decision with input as pod("default", {}, {"podcap.io/debug-until": ""})
}

test_debug_until_outranks_labels if {
	d := podcap.decision with input as pod(
		"default",
		{"podcap.io/capture": "true", "podcap.io/capture-dns": "true"},
		{"podcap.io/debug-until": "2026-03-01T12:01:00Z"},
	)
	d.reason == "annotation podcap.io/debug-until=2026-03-01T12:01:00Z"
	not d.filter
}
