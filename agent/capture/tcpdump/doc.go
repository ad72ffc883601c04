// Package tcpdump is the Linux capture engine: it runs
// `nsenter -n -t <pid> tcpdump -i any -U --immediate-mode -Z root -s <snaplen> -w - -- <filter>`
// (argv, never a shell) in a pod's network namespace and reads the pcap stream from the
// process' stdout with gopacket's pcapgo reader (no cgo). tcpdump's stderr is parsed for its
// kernel counters, which SIGUSR1 makes it print while it runs and which it prints at exit.
//
// On other systems the package builds, and New reports that the engine is unsupported.
package tcpdump
