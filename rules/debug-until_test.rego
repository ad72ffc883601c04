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

# with_limit is the input of pod() on a node whose --max-capture-duration is secs seconds.
with_limit(inp, secs) := object.union(inp, {"limits": {"max_duration_seconds": secs}})

test_debug_until_beyond_the_limit_captures_for_the_limit if {
	inp := with_limit(pod("default", {}, {"podcap.io/debug-until": "2026-03-04T12:00:00Z"}), 86400) # 3 days ahead
	d := podcap.decision with input as inp
	d.capture
	d.max_duration == "86400s"
	d.reason == "annotation podcap.io/debug-until=2026-03-04T12:00:00Z"

	e := podcap.decision with input as with_limit(inp, 7200) # a node with --max-capture-duration=2h
	e.max_duration == "7200s"
}

test_debug_until_within_the_limit_captures_for_the_time_left if {
	d := podcap.decision with input as with_limit(pod("default", {}, {"podcap.io/debug-until": "2026-03-01T13:59:59.5Z"}), 7200)
	d.max_duration == "7200s" # 7199.5 s left, rounded up: exactly the limit
	e := podcap.decision with input as with_limit(pod("default", {}, {"podcap.io/debug-until": "2026-03-01T13:00:00Z"}), 7200)
	e.max_duration == "3600s"
	f := podcap.decision with input as with_limit(pod("default", {}, {"podcap.io/debug-until": "2026-03-02T12:00:00Z"}), 86400)
	f.max_duration == "86400s" # exactly the limit ahead
}

test_debug_until_without_limits_in_the_input_clamps_to_24h if {
	d := podcap.decision with input as pod("default", {}, {"podcap.io/debug-until": "2026-03-04T12:00:00Z"})
	d.max_duration == "86400s"
	bad := [0, -5, "3600", null]
	every b in bad {
		e := podcap.decision with input as with_limit(pod("default", {}, {"podcap.io/debug-until": "2026-03-04T12:00:00Z"}), b)
		e.max_duration == "86400s"
	}
}

test_debug_until_in_the_past_captures_nothing_whatever_the_limit if {
	not podcap.decision with input as with_limit(pod("default", {}, {"podcap.io/debug-until": "2026-02-26T12:00:00Z"}), 86400)
	not podcap.decision with input as with_limit(pod("default", {}, {"podcap.io/debug-until": "2026-03-01T11:59:59Z"}), 7200)
}

test_debug_until_with_never_captures_nothing if {
	inp := with_limit(pod("default", {"podcap.io/capture": "never"}, {"podcap.io/debug-until": "2026-03-01T12:10:00Z"}), 86400)
	d := podcap.decision with input as inp
	d.capture == false
	startswith(d.reason, "denied: label podcap.io/capture=never")
	not podcap.manual_allowed with input as inp
}
