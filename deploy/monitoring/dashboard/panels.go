package dashboard

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	gdash "github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// row is a collapsible row of the dashboard and the panels under it.
type row struct {
	title  string
	panels []cog.Builder[gdash.Panel]
}

func panels(ps ...cog.Builder[gdash.Panel]) []cog.Builder[gdash.Panel] { return ps }

// rows are the dashboard's rows, top to bottom.
func rows() []row {
	return []row{
		{"Captures", panels(
			stacked("Captures running by node and source",
				"Captures whose capture process (tcpdump) or socket (native) runs, by what started them: manual (annotation), policy, alert (Alertmanager), recorder (flight recorder).",
				"short",
				q(`sum by (node, source) (podcap_captures_running{`+node+`})`, "{{node}} {{source}}")),
			stacked("Captures queued by reason",
				"Captures waiting to start: concurrency (a slot under --max-concurrent-captures), budget (room under --retention-max-bytes), cooldown (the pod's cooldown), native_buffer (room under --native-buffer-budget).",
				"short",
				q(`sum by (node, reason) (podcap_captures_queued{`+node+`})`, "{{node}} {{reason}}")),
			timeSeries("Capture starts by source", "Captures started per second, by what started them.", "ops",
				q(`sum by (source) (`+rate("podcap_capture_starts_total", node)+`)`, "{{source}}")),
			timeSeries("Capture failures by reason",
				"Capture attempts that failed or ended on their own per second (resolve: CRI lookup; start; exited; files: the ring could not be written), and capture processes restarted.",
				"ops",
				q(`sum by (node, reason) (`+rate("podcap_capture_failures_total", node)+`)`, "{{node}} {{reason}}"),
				q(`sum by (node) (`+rate("podcap_capture_restarts_total", node)+`)`, "{{node}} restarts")),
			timeSeries("Invalid capture requests by reason",
				"Capture requests refused as invalid per second (invalid_value, host_network, invalid_name, over_budget, engine); each is also an Event on the pod.",
				"ops",
				q(`sum by (reason) (`+rate("podcap_invalid_capture_requests_total", node)+`)`, "{{reason}}")),
			stacked("Captures running by engine", "Captures running on the tcpdump and the native engine.", "short",
				q(`sum by (node, engine) (podcap_engine_captures_running{`+node+`})`, "{{node}} {{engine}}")),
		)},
		{"Traffic captured", panels(
			timeSeries("Packets captured by node", "Packets written to capture files per second.", "pps",
				q(`sum by (node) (`+rate("podcap_capture_packets_total", nodeNS)+`)`, "{{node}}")),
			timeSeries("Bytes captured by node", "Packet data written per second (captured length, without pcap headers).", "Bps",
				q(`sum by (node) (`+rate("podcap_capture_bytes_total", nodeNS)+`)`, "{{node}}")),
			timeSeries("Packets captured by pod", "Packets written per second, by captured pod.", "pps",
				q(`sum by (namespace, pod) (`+rate("podcap_capture_packets_total", nodeNS)+`)`, "{{namespace}}/{{pod}}")),
			timeSeries("Bytes captured by pod", "Packet data written per second, by captured pod.", "Bps",
				q(`sum by (namespace, pod) (`+rate("podcap_capture_bytes_total", nodeNS)+`)`, "{{namespace}}/{{pod}}")),
			timeSeries("Kernel drops by pod",
				"Packets the kernel dropped before the capture read them, per second (tcpdump's counter; the native engine's PACKET_STATISTICS).",
				"pps",
				q(`sum by (namespace, pod) (`+rate("podcap_capture_kernel_drops_total", nodeNS)+`)`, "{{namespace}}/{{pod}}")),
			timeSeries("Kernel drop ratio by node",
				"Dropped / (captured + dropped) packets. Above 1% for 10 minutes fires PodcapKernelDropsHigh.",
				"percentunit",
				q(`sum by (node) (`+rate("podcap_capture_kernel_drops_total", nodeNS)+`) / (sum by (node) (`+
					rate("podcap_capture_packets_total", nodeNS)+`) + sum by (node) (`+rate("podcap_capture_kernel_drops_total", nodeNS)+`))`,
					"{{node}}")),
			timeSeries("Ring file rotations by pod", "Ring file rotations per second: the oldest file of the ring is replaced.", "ops",
				q(`sum by (namespace, pod) (`+rate("podcap_capture_file_rotations_total", nodeNS)+`)`, "{{namespace}}/{{pod}}")),
		)},
		{"Disk and memory", panels(
			timeSeries("Disk used against the budget",
				"Capture files on disk, the worst cases reserved by running captures, and the node's byte budget (--retention-max-bytes). A capture that does not fit the budget waits (queued: budget).",
				"bytes",
				q(`max by (node) (podcap_capture_file_bytes{`+node+`})`, "{{node}} files"),
				q(`max by (node) (podcap_capture_reserved_bytes{`+node+`})`, "{{node}} reserved"),
				q(`max by (node) (podcap_capture_budget_bytes{`+node+`})`, "{{node}} budget")),
			timeSeries("Budget used",
				"The larger of files on disk and reserved worst cases, as a fraction of the budget. Above 90% for 15 minutes fires PodcapDiskBudgetNearlyFull.",
				"percentunit",
				q(`max by (node) (podcap_capture_file_bytes{`+node+`}) / max by (node) (podcap_capture_budget_bytes{`+node+`})`, "{{node}} files"),
				q(`max by (node) (podcap_capture_reserved_bytes{`+node+`}) / max by (node) (podcap_capture_budget_bytes{`+node+`})`, "{{node}} reserved")),
			timeSeries("Retention evictions by reason", "Finished capture directories removed by retention per second (age, budget).", "ops",
				q(`sum by (reason) (`+rate("podcap_retention_evictions_total", node)+`)`, "{{reason}}")),
			timeSeries("Native engine kernel rings", "Bytes of kernel rings reserved by the native engine's captures (bounded by --native-buffer-budget).", "bytes",
				q(`max by (node) (podcap_native_ring_reserved_bytes{`+node+`})`, "{{node}}")),
		)},
		{"Policy", panels(
			timeSeries("Policy evaluations by result", "Policy decisions per second: capture, no_capture, error, cached.", "ops",
				q(`sum by (result) (`+rate("podcap_policy_evaluations_total", node)+`)`, "{{result}}")),
			timeSeries("Policy errors by reason",
				"Policy problems reported on pods per second: eval (could not be evaluated), invalid_decision, manual_veto (a manual request the policy vetoed; expected).",
				"ops",
				q(`sum by (reason) (`+rate("podcap_policy_errors_total", node)+`)`, "{{reason}}")),
			statPanel("Policy reload", "Whether the last policy reload compiled on every selected node (0: some node kept its previous policy).", "none",
				q(`min(podcap_policy_last_reload_successful{`+node+`})`, ""),
				map[string][2]string{"1": {"OK", "green"}, "0": {"failing", "red"}}),
			statPanel("Since the last successful policy reload", "Time since the oldest last successful reload of the selected nodes.", "s",
				q(`time() - min(podcap_policy_last_reload_success_timestamp_seconds{`+node+`} > 0)`, ""), nil),
		)},
		{"Alertmanager alerts", panels(
			timeSeries("Alerts received by status", "Alerts in the webhook notifications that decoded, per second, by the alert's status.", "ops",
				q(`sum by (status) (`+rate("podcap_alerts_received_total", node)+`)`, "{{status}}")),
			timeSeries("Alerts active", "Active alerts each agent sees (input.alerts of the policy), and its CaptureAlert objects.", "short",
				q(`max by (node) (podcap_alerts_active{`+node+`})`, "{{node}} active"),
				q(`max by (node) (podcap_alert_objects{`+node+`})`, "{{node}} objects")),
			timeSeries("Alerts recorded, refused and store errors",
				"Alerts recorded as CaptureAlert objects, refused (max_alerts, max_objects, invalid), and failed API requests of the store, per second.",
				"ops",
				q(`sum by (status) (`+rate("podcap_alerts_recorded_total", node)+`)`, "recorded {{status}}"),
				q(`sum by (reason) (`+rate("podcap_alerts_refused_total", node)+`)`, "refused {{reason}}"),
				q(`sum by (operation) (`+rate("podcap_alert_store_errors_total", node)+`)`, "store error {{operation}}")),
			timeSeries("Webhook requests by code", "Alertmanager webhook requests per second by the HTTP code answered (499: the client went away).", "reqps",
				q(`sum by (code) (`+rate("podcap_webhook_requests_total", node)+`)`, "{{code}}")),
			timeSeries("Webhook latency", "Time from a webhook request to its answer, recording included.", "s",
				quantiles("podcap_webhook_request_duration_seconds", "")...),
		)},
		{"Latency", panels(
			timeSeries("CRI lookup latency", "Time to find a pod's network namespace through the CRI, by result.", "s",
				quantiles("podcap_cri_lookup_duration_seconds", "result")...),
			timeSeries("Capture request to first packet", "Time from a capture's request to its first packet in the ring, by what started it.", "s",
				quantiles("podcap_capture_first_packet_seconds", "source")...),
			timeSeries("Pod sync", "Time to sync one pod, and syncs that failed and were retried per second.", "s",
				append(quantiles("podcap_sync_duration_seconds", ""),
					q(`sum(`+rate("podcap_sync_errors_total", node)+`)`, "errors/s"))...),
		)},
		{"Retrieval API and live streams", panels(
			timeSeries("Live-stream readers", "Readers of live capture streams, and slow readers cut off per second.", "short",
				q(`sum by (node) (podcap_stream_readers{`+node+`})`, "{{node}} readers"),
				q(`sum by (node) (`+rate("podcap_stream_readers_cut_total", node)+`)`, "{{node}} cut/s")),
			timeSeries("API requests by route and code", "Retrieval API requests per second.", "reqps",
				q(`sum by (route, code) (`+rate("podcap_api_requests_total", node)+`)`, "{{route}} {{code}}")),
			timeSeries("API authorizations by result", "TokenReview/SubjectAccessReview outcomes per second: allowed, denied, error.", "ops",
				q(`sum by (result) (`+rate("podcap_api_authorizations_total", node)+`)`, "{{result}}")),
			statPanel("API transport", "How the API port protects bearer tokens, by node count: files (mounted key pair), self_signed, off (plain HTTP).", "none",
				q(`count by (tls) (podcap_api_tls_info{`+node+`} == 1)`, "{{tls}}"), nil),
			statPanel("Agent versions", "Agents by version (podcap_build_info): more than one during a rollout.", "none",
				q(`count by (version) (podcap_build_info{`+node+`})`, "{{version}}"), nil),
		)},
	}
}
