package main

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// alertLine is one line of alerts.jsonl (cmd/alertlat): a capture round (kind direct or
// alertmanager) or a blast.
type alertLine struct {
	Kind          string  `json:"kind"`
	PostMS        float64 `json:"post_ms"`
	NotifyMS      float64 `json:"notify_ms"`
	FileMS        float64 `json:"file_ms"`
	PacketMS      float64 `json:"packet_ms"`
	AfterNotifyMS float64 `json:"packet_after_notify_ms"`
	StopMS        float64 `json:"stop_ms"`
	Error         string  `json:"error"`
	// blast
	Batch       int     `json:"batch"`
	Concurrency int     `json:"concurrency"`
	Alerts      int     `json:"alerts"`
	Requests    int     `json:"requests"`
	Retries503  int     `json:"retries_503"`
	Recorded    int     `json:"recorded"`
	Refused     int     `json:"refused"`
	Seconds     float64 `json:"seconds"`
	AlertsPerS  float64 `json:"alerts_per_s"`
}

// alertRounds are the percentiles of one kind of capture round (ms).
type alertRounds struct {
	N           int      `json:"n"`
	Failed      int      `json:"failed"`
	PostMS      pct      `json:"post_ms"`
	NotifyMS    *pct     `json:"notify_ms,omitempty"`
	FileMS      pct      `json:"file_ms"`
	PacketMS    pct      `json:"first_packet_ms"`
	AfterNotify *pct     `json:"first_packet_after_notify_ms,omitempty"`
	StopMS      pct      `json:"stop_ms"`
	Errors      []string `json:"errors,omitempty"`
}

type alertsSummary struct {
	Direct       *alertRounds    `json:"direct,omitempty"`
	Alertmanager *alertRounds    `json:"alertmanager,omitempty"`
	Blasts       []alertLine     `json:"blasts,omitempty"`
	Meta         json.RawMessage `json:"meta,omitempty"` // alerts-meta.json
}

func alertsStats(lines []alertLine, meta []byte) *alertsSummary {
	if len(lines) == 0 {
		return nil
	}
	s := &alertsSummary{Meta: meta}
	byKind := map[string][]alertLine{}
	for _, l := range lines {
		if l.Kind == "blast" {
			s.Blasts = append(s.Blasts, l)
			continue
		}
		byKind[l.Kind] = append(byKind[l.Kind], l)
	}
	s.Direct = alertRoundStats(byKind["direct"], false)
	s.Alertmanager = alertRoundStats(byKind["alertmanager"], true)
	return s
}

func alertRoundStats(lines []alertLine, viaAM bool) *alertRounds {
	if len(lines) == 0 {
		return nil
	}
	r := &alertRounds{N: len(lines)}
	var post, notify, file, packet, after, stop []float64
	for _, l := range lines {
		if l.Error != "" {
			r.Failed++
			r.Errors = append(r.Errors, l.Error)
		}
		post = append(post, l.PostMS)
		if l.FileMS >= 0 {
			file = append(file, l.FileMS)
		}
		if l.PacketMS >= 0 {
			packet = append(packet, l.PacketMS)
			if viaAM && l.NotifyMS > 0 {
				after = append(after, l.AfterNotifyMS)
			}
		}
		if viaAM && l.NotifyMS > 0 {
			notify = append(notify, l.NotifyMS)
		}
		if l.StopMS >= 0 {
			stop = append(stop, l.StopMS)
		}
	}
	r.PostMS, r.FileMS, r.PacketMS, r.StopMS = stats(post), stats(file), stats(packet), stats(stop)
	if viaAM {
		n, a := stats(notify), stats(after)
		r.NotifyMS, r.AfterNotify = &n, &a
	}
	return r
}

func writeAlerts(w *bytes.Buffer, s *alertsSummary) {
	var meta struct {
		MeanMS *float64 `json:"am_notification_latency_mean_ms"`
		Count  float64  `json:"am_notifications"`
		Failed float64  `json:"am_notifications_failed"`
	}
	_ = json.Unmarshal(s.Meta, &meta)
	if r := s.Direct; r != nil {
		writeSteps(w, fmt.Sprintf("D. Alert → first packet on disk, POST straight to the webhook (%d alerts, %d failed; ms from the POST; nearest-rank)", r.N, r.Failed),
			"step", []step{
				{"webhook answered 200 (CaptureAlert applied)", r.PostMS},
				{"alert session's capture file created", r.FileMS},
				{"**first packet on disk (pcapng packet block)**", r.PacketMS},
				{"resolve POST → no alert capture running (stop_grace 0)", r.StopMS},
			}, r.Errors)
	}
	if r := s.Alertmanager; r != nil {
		writeSteps(w, fmt.Sprintf("D. Alert → first packet on disk through the real Alertmanager, group_wait 0 (%d alerts, %d failed; ms from the POST to Alertmanager's /api/v2/alerts)", r.N, r.Failed),
			"step", []step{
				{"Alertmanager answered the POST", r.PostMS},
				{"agent recorded Alertmanager's notification (CaptureAlert lastNotifiedAt)", *r.NotifyMS},
				{"alert session's capture file created", r.FileMS},
				{"**first packet on disk**", r.PacketMS},
				{"**first packet, from the agent holding the notification**", *r.AfterNotify},
				{"resolve POST → no alert capture running (Alertmanager sends resolves at group_interval 1 s)", r.StopMS},
			}, r.Errors)
		if meta.MeanMS != nil {
			fmt.Fprintf(w, "- Alertmanager's own webhook notification latency (alertmanager_notification_latency_seconds, its POST until our answer): mean %.1f ms over %.0f notifications, %.0f failed\n",
				*meta.MeanMS, meta.Count, meta.Failed)
		}
	}
	if len(s.Blasts) > 0 {
		fmt.Fprintf(w, "\n### D. Alerts a second the webhook records (distinct firing alerts; one CaptureAlert apply each)\n\n")
		fmt.Fprintln(w, "| alerts per notification | in flight | alerts | requests | 503 (sent again) | recorded | refused | seconds | **alerts/s** |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
		for _, b := range s.Blasts {
			fmt.Fprintf(w, "| %d | %d | %d | %d | %d | %d | %d | %.1f | **%.0f** |\n",
				b.Batch, b.Concurrency, b.Alerts, b.Requests, b.Retries503, b.Recorded, b.Refused, b.Seconds, b.AlertsPerS)
		}
		for _, b := range s.Blasts {
			if b.Error != "" {
				fmt.Fprintf(w, "- error (%dx%d): %s\n", b.Batch, b.Concurrency, b.Error)
			}
		}
	}
}
