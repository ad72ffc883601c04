# core.rego composes the other files of package podcap into the two values the agent reads.
#
# Every rule file contributes to one of two partial sets:
#   captures contains {"priority": N, "reason": "...", <decision fields but "capture">}
#   deny     contains "<why captures are forbidden here>"
# and this file turns them into:
#   decision       the candidate with the highest priority, with "capture": true, unless a deny
#                  reason applies: then {"capture": false, "reason": "denied: ..."};
#                  undefined when nothing applies (the agent reads that as "no capture").
#   manual_allowed false when a deny reason applies: the policy's veto of the manual annotation.
# Give candidates distinct priorities; between equal ones the smallest reason wins (then the
# smallest object in Rego's ordering), so the outcome never depends on evaluation order.
package podcap

default manual_allowed := true

manual_allowed := false if count(deny) > 0

decision := {"capture": false, "reason": concat("", ["denied: ", concat("; ", deny)])} if {
	count(deny) > 0
} else := object.union(object.remove(best, {"priority"}), {"capture": true}) if {
	best
}

# top are the candidates of the highest priority.
top contains c if {
	some c in captures
	c.priority == max({p.priority | some p in captures})
}

# best is the winning candidate: the top one with the smallest reason.
best := min({c |
	some c in top
	c.reason == min({t.reason | some t in top})
})

# node_limit is the node's limit key of input.limits (the agent's flags: max_files,
# max_file_size_bytes, max_duration_seconds), or def, the agent's default, for an input built
# by something other than the agent. Rules keep their decisions within it, so that the agent
# never refuses them for their size or duration.
node_limit(key, def) := n if {
	n := input.limits[key]
	is_number(n)
	n >= 1
} else := def
