# namespace-deny.rego: namespaces where podcap never captures, whatever other rules or the manual
# annotation ask for (a deny reason also sets manual_allowed to false, see core.rego). Edit the
# set to guard more namespaces.
package podcap

denied_namespaces := {"kube-system"}

deny contains sprintf("namespace %s is on the deny list of namespace-deny.rego", [input.pod.namespace]) if {
	input.pod.namespace in denied_namespaces
}
