package podcap_test

import data.podcap

# alert_pod is the input of pod web-7d9f-abcde in namespace shop, owned by owner, with alerts.
alert_pod(owner, alerts) := {
	"node": "node-1",
	"now": now,
	"pod": {
		"namespace": "shop",
		"name": "web-7d9f-abcde",
		"uid": "00000000-0000-0000-0000-000000000002",
		"labels": {"app": "web", "pod-template-hash": "7d9f"},
		"annotations": {},
		"phase": "Running",
		"hostNetwork": false,
		"ip": "10.0.0.8",
		"owner": owner,
	},
	"alerts": alerts,
	"manual": {"requested": false, "files": 0, "error": ""},
}

rs := {"kind": "ReplicaSet", "name": "web-7d9f"}

# firing is an active alert with the given fingerprint, labels and annotations.
firing(fp, labels, annotations) := {
	"fingerprint": fp,
	"status": "firing",
	"labels": labels,
	"annotations": annotations,
	"startsAt": "2026-03-01T11:58:00Z",
	"endsAt": "0001-01-01T00:00:00Z",
	"generatorURL": "http://prometheus:9090/graph",
}

defaults := {
	"capture": true,
	"files": 5,
	"file_size_bytes": 1000000,
	"snaplen": 0,
	"filter": "",
	"max_duration": "3600s",
	"stop_grace": "120s",
	"cooldown": "300s",
	"format": "pcapng",
}

test_alert_on_the_pod_captures_it_with_the_defaults if {
	a := firing("fp1", {"alertname": "HighTCPRetransmits", "namespace": "shop", "pod": "web-7d9f-abcde"}, {})
	d := podcap.decision with input as alert_pod(rs, [a])
	d == object.union(defaults, {"reason": "alert HighTCPRetransmits firing", "alert_fingerprints": ["fp1"]})
}

test_alert_on_another_pod_or_namespace_no_capture if {
	other_pod := firing("fp1", {"alertname": "A", "namespace": "shop", "pod": "web-0"}, {})
	other_ns := firing("fp2", {"alertname": "A", "namespace": "cart", "pod": "web-7d9f-abcde"}, {})
	no_ns := firing("fp3", {"alertname": "A", "pod": "web-7d9f-abcde"}, {})
	no_target := firing("fp4", {"alertname": "A", "namespace": "shop"}, {})
	not podcap.decision with input as alert_pod(rs, [other_pod, other_ns, no_ns, no_target])
}

test_deployment_alert_captures_its_replicaset_pods if {
	a := firing("fp1", {"alertname": "KubeDeploymentReplicasMismatch", "namespace": "shop", "deployment": "web"}, {})
	d := podcap.decision with input as alert_pod(rs, [a])
	d.alert_fingerprints == ["fp1"]
	d.reason == "alert KubeDeploymentReplicasMismatch firing"
}

test_deployment_alert_needs_the_template_hash if {
	a := firing("fp1", {"alertname": "A", "namespace": "shop", "deployment": "web"}, {})
	not podcap.decision with input as alert_pod({"kind": "ReplicaSet", "name": "web-other"}, [a])
	not podcap.decision with input as alert_pod({"kind": "StatefulSet", "name": "web-7d9f"}, [a])
	other := firing("fp2", {"alertname": "A", "namespace": "shop", "deployment": "we"}, {}) # not a prefix match
	not podcap.decision with input as alert_pod({"kind": "ReplicaSet", "name": "we-b-7d9f"}, [other])
}

test_statefulset_and_daemonset_alerts if {
	sts := firing("fp1", {"alertname": "A", "namespace": "shop", "statefulset": "db"}, {})
	podcap.decision.alert_fingerprints == ["fp1"] with input as alert_pod({"kind": "StatefulSet", "name": "db"}, [sts])
	not podcap.decision with input as alert_pod({"kind": "DaemonSet", "name": "db"}, [sts])
	ds := firing("fp2", {"alertname": "B", "namespace": "shop", "daemonset": "agent"}, {})
	podcap.decision.alert_fingerprints == ["fp2"] with input as alert_pod({"kind": "DaemonSet", "name": "agent"}, [ds])
	not podcap.decision with input as alert_pod({"kind": "StatefulSet", "name": "agent"}, [ds])
}

test_every_matching_alert_is_listed_and_named if {
	a := firing("fp-b", {"alertname": "Latency", "namespace": "shop", "pod": "web-7d9f-abcde"}, {})
	b := firing("fp-a", {"alertname": "Errors", "namespace": "shop", "deployment": "web"}, {})
	c := firing("fp-c", {"alertname": "Other", "namespace": "shop", "pod": "web-0"}, {})
	d := podcap.decision with input as alert_pod(rs, [a, b, c])
	d.alert_fingerprints == ["fp-a", "fp-b"]
	d.reason == "alerts Errors, Latency firing"
}

test_alert_can_opt_out if {
	a := firing("fp1", {"alertname": "A", "namespace": "shop", "pod": "web-7d9f-abcde"}, {"podcap_capture": "false"})
	not podcap.decision with input as alert_pod(rs, [a])
}

test_per_alert_settings if {
	a := firing("fp1", {"alertname": "A", "namespace": "shop", "pod": "web-7d9f-abcde"}, {
		"podcap_files": "10",
		"podcap_file_size_bytes": "2e6",
		"podcap_snaplen": "128",
		"podcap_filter": "tcp port 443",
		"podcap_max_duration": "30m",
		"podcap_stop_grace": "90s",
		"podcap_cooldown": "1h",
		"podcap_format": "pcap",
	})
	d := podcap.decision with input as alert_pod(rs, [a])
	d == {
		"capture": true,
		"reason": "alert A firing",
		"alert_fingerprints": ["fp1"],
		"files": 10,
		"file_size_bytes": 2000000,
		"snaplen": 128,
		"filter": "tcp port 443",
		"max_duration": "1800s",
		"stop_grace": "90s",
		"cooldown": "3600s",
		"format": "pcap",
	}
}

test_bad_settings_are_ignored if {
	bad := {
		"podcap_files": "65",
		"podcap_file_size_bytes": "1000",
		"podcap_snaplen": "10",
		"podcap_filter": "-z /tmp/x",
		"podcap_max_duration": "25h",
		"podcap_stop_grace": "-1m",
		"podcap_cooldown": "forever",
		"podcap_format": "erf",
	}
	a := firing("fp1", {"alertname": "A", "namespace": "shop", "pod": "web-7d9f-abcde"}, bad)
	d := podcap.decision with input as alert_pod(rs, [a])
	d == object.union(defaults, {"reason": "alert A firing", "alert_fingerprints": ["fp1"]})
}

test_more_bad_values_are_ignored if {
	values := [
		{"podcap_files": "2.5"}, {"podcap_files": "five"}, {"podcap_files": ""},
		{"podcap_filter": "tcp; rm -rf /"}, {"podcap_filter": "   "}, {"podcap_filter": "port 80\nor port 81"},
		{"podcap_filter": "host $(id)"}, {"podcap_max_duration": "0"}, {"podcap_max_duration": "10 minutes"}, {"podcap_stop_grace": "2h"},
		{"podcap_snaplen": "300000"},
	]
	every v in values {
		a := firing("fp1", {"alertname": "A", "namespace": "shop", "pod": "web-7d9f-abcde"}, v)
		d := podcap.decision with input as alert_pod(rs, [a])
		d == object.union(defaults, {"reason": "alert A firing", "alert_fingerprints": ["fp1"]})
	}
}

test_a_bad_alert_does_not_spoil_the_others if {
	bad := firing("fp1", {"alertname": "Bad\u0007Name", "namespace": "shop", "pod": "web-7d9f-abcde"}, {"podcap_files": "x", "podcap_filter": "-x"})
	good := firing("fp2", {"alertname": "Good", "namespace": "shop", "pod": "web-7d9f-abcde"}, {"podcap_files": "8"})
	d := podcap.decision with input as alert_pod(rs, [bad, good])
	d.files == 8
	d.filter == ""
	d.reason == "alerts Bad?Name, Good firing"
	d.alert_fingerprints == ["fp1", "fp2"]
}

test_several_alerts_combine_settings if {
	a := firing("fp1", {"alertname": "A", "namespace": "shop", "pod": "web-7d9f-abcde"}, {
		"podcap_files": "3", "podcap_snaplen": "128", "podcap_filter": "tcp",
		"podcap_stop_grace": "10m", "podcap_format": "pcap",
	})
	b := firing("fp2", {"alertname": "B", "namespace": "shop", "pod": "web-7d9f-abcde"}, {
		"podcap_files": "7", "podcap_snaplen": "256", "podcap_filter": "tcp",
		"podcap_cooldown": "1m", "podcap_format": "pcap",
	})
	d := podcap.decision with input as alert_pod(rs, [a, b])
	d.files == 7
	d.snaplen == 256
	d.filter == "tcp"
	d.stop_grace == "600s"
	d.cooldown == "300s" # the default of a outlasts b's 1m
	d.format == "pcap"

	c := firing("fp3", {"alertname": "C", "namespace": "shop", "pod": "web-7d9f-abcde"}, {})
	e := podcap.decision with input as alert_pod(rs, [a, b, c])
	e.snaplen == 0 # c wants whole packets
	e.filter == "" # and all traffic
	e.format == "pcapng"
}

test_many_alerts_keep_the_reason_short if {
	alerts := [firing(sprintf("fp%d", [i]), {"alertname": sprintf("AVeryLongAlertName%03d", [i]), "namespace": "shop", "pod": "web-7d9f-abcde"}, {}) |
		some i in numbers.range(1, 40)
	]
	d := podcap.decision with input as alert_pod(rs, alerts)
	count(d.reason) <= 256
	endswith(d.reason, "... (40) firing")
	count(d.alert_fingerprints) == 40
}

test_alert_outranks_the_other_rules if {
	a := firing("fp1", {"alertname": "A", "namespace": "shop", "pod": "web-7d9f-abcde"}, {})
	inp := object.union(alert_pod(rs, [a]), {"pod": {
		"labels": {"podcap.io/capture-dns": "true", "pod-template-hash": "7d9f"},
		"annotations": {"podcap.io/debug-until": "2026-03-01T12:10:00Z"},
	}})
	d := podcap.decision with input as inp
	d.reason == "alert A firing"
}

test_deny_beats_alerts if {
	a := firing("fp1", {"alertname": "A", "namespace": "kube-system", "pod": "web-7d9f-abcde"}, {})
	inp := object.union(alert_pod(rs, [a]), {"pod": {"namespace": "kube-system"}})
	d := podcap.decision with input as inp
	d.capture == false
}

test_no_alerts_no_capture if {
	not podcap.decision with input as alert_pod(rs, [])
}

test_alert_on_a_never_pod_captures_nothing if {
	a := firing("fp1", {"alertname": "A", "namespace": "shop", "pod": "web-7d9f-abcde"}, {})
	inp := object.union(alert_pod(rs, [a]), {"pod": {"labels": {"podcap.io/capture": "never", "pod-template-hash": "7d9f"}}})
	d := podcap.decision with input as inp
	d.capture == false
	startswith(d.reason, "denied: label podcap.io/capture=never")
	not d.alert_fingerprints

	# a Deployment's alert names the pod through its owner and pod-template-hash: still never
	b := firing("fp2", {"alertname": "B", "namespace": "shop", "deployment": "web"}, {})
	e := podcap.decision with input as object.union(alert_pod(rs, [b]), {"pod": {"labels": {"podcap.io/capture": "never", "pod-template-hash": "7d9f"}}})
	e.capture == false
}

test_alert_settings_follow_the_node_limits if {
	# a node run with --max-files=3 --max-file-size-bytes=500000 --max-capture-duration=30m:
	# the defaults (5 files, 1 MB, 1h) are lowered to its limits, and annotations above them
	# fall back to those, so the agent accepts the decision
	limits := {"max_files": 3, "max_file_size_bytes": 500000, "max_duration_seconds": 1800}
	plain := firing("fp1", {"alertname": "A", "namespace": "shop", "pod": "web-7d9f-abcde"}, {})
	d := podcap.decision with input as object.union(alert_pod(rs, [plain]), {"limits": limits})
	d.files == 3
	d.file_size_bytes == 500000
	d.max_duration == "1800s"

	big := firing("fp2", {"alertname": "A", "namespace": "shop", "pod": "web-7d9f-abcde"}, {
		"podcap_files": "4", "podcap_file_size_bytes": "600000", "podcap_max_duration": "31m",
	})
	d2 := podcap.decision with input as object.union(alert_pod(rs, [big]), {"limits": limits})
	d2.files == 3
	d2.file_size_bytes == 500000
	d2.max_duration == "1800s"

	within := firing("fp3", {"alertname": "A", "namespace": "shop", "pod": "web-7d9f-abcde"}, {
		"podcap_files": "2", "podcap_file_size_bytes": "100000", "podcap_max_duration": "10m",
	})
	d3 := podcap.decision with input as object.union(alert_pod(rs, [within]), {"limits": limits})
	d3.files == 2
	d3.file_size_bytes == 100000
	d3.max_duration == "600s"
}
