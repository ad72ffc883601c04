# alerts.rego: an Alertmanager alert captures the pods it names, for as long as it fires (plus
# a stop grace to record the recovery), with a cooldown so that a flapping alert cannot restart
# captures in a loop. An alert names pods by its labels, in the pod's namespace:
#   namespace + pod                          that pod;
#   namespace + statefulset / daemonset      the pods that workload owns (input.pod.owner);
#   namespace + deployment                   the pods of its ReplicaSets, named
#                                            <deployment>-<pod-template-hash> (the pod's label).
# An alert annotated podcap_capture=false captures nothing. Every alert that names the pod
# counts: the decision lists their fingerprints (sorted) and names them in its reason. Alerts
# may ask for other settings with annotations (see rules/README.md); a value that is not valid
# is ignored (the default applies), so it never spoils the capture the other alerts ask for.
# It outranks the other rules: a firing alert is why podcap exists.
package podcap

# alert_defaults are the settings of an alert that asks for nothing else.
alert_defaults := {
	"files": 5,
	"file_size_bytes": 1000000,
	"snaplen": 0,
	"max_duration": "1h",
	"stop_grace": "2m",
	"cooldown": "5m",
	"format": "pcapng",
}

# alert_limits bound what an alert's annotations may ask for: the node's own limits
# (input.limits: the agent's --max-files, --max-file-size-bytes, --max-capture-duration; their
# defaults for an input without them), so that no alert capture is refused for its size or
# duration. A default above a node's limit is lowered to it.
alert_limits := {
	"files": node_limit("max_files", 64),
	"file_size_bytes": node_limit("max_file_size_bytes", 100000000),
	"max_duration": sprintf("%ds", [node_limit("max_duration_seconds", 86400)]),
	"stop_grace": "1h",
	"cooldown": "24h",
}

captures contains {
	"priority": 40,
	"reason": alert_reason,
	"alert_fingerprints": sort({a.fingerprint | some a in alert_matched}),
	"files": max({s.files | some s in alert_settings}),
	"file_size_bytes": max({s.file_size_bytes | some s in alert_settings}),
	"snaplen": alert_snaplen,
	"filter": alert_filter,
	"max_duration": alert_duration(max({s.max_duration | some s in alert_settings})),
	"stop_grace": alert_duration(max({s.stop_grace | some s in alert_settings})),
	"cooldown": alert_duration(max({s.cooldown | some s in alert_settings})),
	"format": alert_format,
} if count(alert_matched) > 0

# alert_matched are the alerts that name this pod.
alert_matched contains a if {
	some a in input.alerts
	a.labels.namespace == input.pod.namespace
	alert_names_pod(a.labels)
	not a.annotations["podcap_capture"] == "false"
}

alert_names_pod(labels) if labels.pod == input.pod.name

alert_names_pod(labels) if {
	input.pod.owner.kind == "StatefulSet"
	labels.statefulset == input.pod.owner.name
}

alert_names_pod(labels) if {
	input.pod.owner.kind == "DaemonSet"
	labels.daemonset == input.pod.owner.name
}

alert_names_pod(labels) if {
	input.pod.owner.kind == "ReplicaSet"
	hash := input.pod.labels["pod-template-hash"]
	input.pod.owner.name == concat("-", [labels.deployment, hash])
}

# alert_reason names the alerts (printable ASCII, at most ~200 bytes: a decision's reason
# has a 256-byte cap, and alert names are not ours to trust).
alert_reason := sprintf("alert %s firing", [alert_names]) if {
	count(alert_name_set) == 1
} else := sprintf("alerts %s firing", [alert_names])

alert_name_set := {regex.replace(object.get(a.labels, "alertname", "?"), `[^ -~]`, "?") | some a in alert_matched}

alert_names := names if {
	names := concat(", ", sort(alert_name_set))
	count(names) <= 200
} else := sprintf("%s... (%d)", [substring(concat(", ", sort(alert_name_set)), 0, 200), count(alert_name_set)])

# alert_settings are the matched alerts' settings: each annotation if valid, else the default.
alert_settings contains {
	"files": alert_int(a, "podcap_files", 1, alert_limits.files, alert_defaults.files),
	"file_size_bytes": alert_int(a, "podcap_file_size_bytes", 65536, alert_limits.file_size_bytes, alert_defaults.file_size_bytes),
	"snaplen": alert_snaplen_of(a),
	"filter": alert_filter_of(a),
	"max_duration": alert_ns(a, "podcap_max_duration", 1000000000, alert_limits.max_duration, alert_defaults.max_duration),
	"stop_grace": alert_ns(a, "podcap_stop_grace", 0, alert_limits.stop_grace, alert_defaults.stop_grace),
	"cooldown": alert_ns(a, "podcap_cooldown", 0, alert_limits.cooldown, alert_defaults.cooldown),
	"format": alert_format_of(a),
} if some a in alert_matched

# Several alerts: the largest ring, the longest durations, whole packets if any asks for them,
# a filter only if all agree (an alert without one wants all traffic), pcap only if all ask.
alert_snaplen := 0 if {
	some s in alert_settings
	s.snaplen == 0
} else := max({s.snaplen | some s in alert_settings})

alert_filter := f if {
	filters := {s.filter | some s in alert_settings}
	count(filters) == 1
	some f in filters
} else := ""

alert_format := "pcap" if {
	{s.format | some s in alert_settings} == {"pcap"}
} else := "pcapng"

alert_int(a, key, lo, hi, def) := n if {
	n := to_number(a.annotations[key])
	n == floor(n)
	n >= lo
	n <= hi
} else := min([def, hi])

alert_snaplen_of(a) := n if {
	n := to_number(a.annotations["podcap_snaplen"])
	n == floor(n)
	alert_snaplen_ok(n)
} else := alert_defaults.snaplen

alert_snaplen_ok(0)

alert_snaplen_ok(n) if {
	n >= 64
	n <= 262144
}

# alert_ns is the annotation's Go duration in nanoseconds, from lo to hi (a duration string).
alert_ns(a, key, lo, hi, def) := ns if {
	ns := time.parse_duration_ns(a.annotations[key])
	ns >= lo
	ns <= time.parse_duration_ns(hi)
} else := min([time.parse_duration_ns(def), time.parse_duration_ns(hi)])

# alert_filter_of is the annotation's BPF filter if it passes the agent's first checks
# (printable ASCII on one line, at most 1024 bytes, not only blanks, no leading "-", no ; $ `);
# tcpdump's own verdict comes from the agent.
alert_filter_of(a) := f if {
	f := a.annotations["podcap_filter"]
	count(f) <= 1024
	regex.match(`^[ -~]*$`, f)
	trim_space(f) != ""
	not startswith(trim_space(f), "-")
	not regex.match("[;$`]", f)
} else := ""

alert_format_of(a) := f if {
	f := a.annotations["podcap_format"]
	f in {"pcap", "pcapng"}
} else := alert_defaults.format

# alert_duration writes nanoseconds as a Go duration: whole seconds where it can.
alert_duration(ns) := sprintf("%ds", [round(ns / 1000000000)]) if {
	ns % 1000000000 == 0
} else := sprintf("%dns", [ns])
