package capture

import (
	"runtime"
	"strings"
)

// What a capture's Spec makes of its ring: the format, the file names, and the section
// header a pcapng ring carries.

// ringFormat is the format a capture's files are written in: the Spec's, except that a
// manual capture is always pcap, byte-compatible with tcpdump's.
func ringFormat(s Spec) string {
	if s.Source != SourceManual && s.Format == FormatPcapng {
		return FormatPcapng
	}
	return FormatPcap
}

// ringBase is the base name of a capture's ring files: RingBase, "capture-<pod>.pcap", or
// for pcapng "capture-<pod>.pcapng" (files capture-<pod>.pcapng0, …). Both start with
// RingBase, which is what the manager's globs look for.
func ringBase(s Spec) string {
	if ringFormat(s) == FormatPcapng {
		return RingBase(s.Pod) + "ng"
	}
	return RingBase(s.Pod)
}

// ringSection is the section header of a capture's pcapng files: a comment for each line of
// the Spec's Trigger (the rule's reason; each alert's name, fingerprint and generatorURL),
// then "pod <namespace>/<pod>", "node <node>" (when known) and "podcap-agent <version>"
// ("dev" when empty); shb_userappl "podcap". The trigger's lines come from policy and alert
// data: they are bounded, and cut first, so that the pod, node and agent lines always fit.
func ringSection(s Spec, node, version string) SectionInfo {
	if version == "" {
		version = "dev"
	}
	fixed := []string{"pod " + s.Namespace + "/" + s.Pod}
	if node != "" {
		fixed = append(fixed, "node "+node)
	}
	fixed = boundComments(append(fixed, "podcap-agent "+version), MaxSectionComments, MaxSectionCommentBytes)
	used := 0
	for _, c := range fixed {
		used += len(c)
	}
	var trigger []string
	if s.Trigger != "" {
		trigger = boundComments(strings.Split(s.Trigger, "\n"), MaxSectionComments-len(fixed), MaxSectionCommentBytes-used)
	}
	return SectionInfo{
		Comments: append(trigger, fixed...),
		Hardware: runtime.GOARCH,
		OS:       runtime.GOOS,
		UserAppl: "podcap",
	}
}
