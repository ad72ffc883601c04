package native

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/bpf"
)

// sll2HeaderLen is the LINUX_SLL2 header libpcap puts before each packet of `-i any`.
const sll2HeaderLen = 20

// maxInstructions is the kernel's BPF_MAXINSNS.
const maxInstructions = 4096

// ErrUntranslatableFilter refuses a filter whose program reads something of the LINUX_SLL2
// header that a cooked AF_PACKET socket's kernel filter cannot see, or whose meaning would
// change there: the capture would otherwise keep other packets than tcpdump's filter does.
var ErrUntranslatableFilter = errors.New("filter cannot be run exactly by the native engine")

// Linux's classic BPF ancillary loads (linux/filter.h): an absolute load at SKF_AD_OFF + n
// reads the packet's metadata instead of its bytes.
const (
	skfAdOff      = 0xfffff000 // SKF_AD_OFF, -0x1000
	skfAdProtocol = 0
	skfAdPktType  = 4
	skfAdIfIndex  = 8
)

// compileTimeout bounds one tcpdump -ddd run.
const compileTimeout = 10 * time.Second

// compileFilter compiles expr with tcpdump for a LINUX_SLL2 capture of snaplen bytes
// (`tcpdump -ddd -y LINUX_SLL2 -s <snaplen> -- <expr>`: libpcap's compiler, without opening
// any socket, as capture.FilterChecker checks filters) and adjusts the program for the cooked
// socket with cookedProgram.
func compileFilter(ctx context.Context, tcpdump, expr string, snaplen int) ([]bpf.RawInstruction, error) {
	ctx, cancel := context.WithTimeout(ctx, compileTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tcpdump, "-ddd", "-y", "LINUX_SLL2", "-s", strconv.Itoa(snaplen), "--", expr)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimPrefix(strings.TrimSpace(stderr.String()), "tcpdump: ")
		return nil, fmt.Errorf("compile filter %q with %s: %w: %s", expr, tcpdump, err, msg)
	}
	prog, err := parseDDD(stdout.String())
	if err != nil {
		return nil, fmt.Errorf("compile filter %q: %w", expr, err)
	}
	cooked, err := cookedProgram(prog)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrUntranslatableFilter, expr, err)
	}
	return cooked, nil
}

// parseDDD reads tcpdump -ddd's output: the instruction count, then one instruction a line
// as four decimal numbers "code jt jf k".
func parseDDD(out string) ([]bpf.RawInstruction, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	n, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || n <= 0 || n > maxInstructions || n != len(lines)-1 {
		return nil, fmt.Errorf("tcpdump -ddd output: %d lines, first %q", len(lines), lines[0])
	}
	prog := make([]bpf.RawInstruction, n)
	for i, line := range lines[1:] {
		f := strings.Fields(line)
		var v [4]uint64
		if len(f) != 4 {
			return nil, fmt.Errorf("tcpdump -ddd output, instruction %d: %q", i, line)
		}
		for j, bits := range []int{16, 8, 8, 32} {
			if v[j], err = strconv.ParseUint(f[j], 10, bits); err != nil {
				return nil, fmt.Errorf("tcpdump -ddd output, instruction %d: %q: %w", i, line, err)
			}
		}
		prog[i] = bpf.RawInstruction{Op: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])}
	}
	return prog, nil
}

// Classic BPF opcode fields (linux/bpf_common.h).
const (
	bpfClassMask = 0x07
	bpfLD        = 0x00
	bpfLDX       = 0x01
	bpfSizeMask  = 0x18
	bpfW         = 0x00
	bpfH         = 0x08
	bpfB         = 0x10
	bpfModeMask  = 0xe0
	bpfABS       = 0x20
	bpfIND       = 0x40
	bpfLEN       = 0x80
	bpfMSH       = 0xa0
	bpfJA        = 0x05 // BPF_JMP|BPF_JA
)

// cookedProgram adjusts a program compiled for LINUX_SLL2 to a cooked AF_PACKET socket,
// whose kernel filter sees the packet from its network header on, without the 20-byte
// header libpcap builds in user space. It is libpcap's own adjustment (pcap-linux.c,
// fix_offset), made exact, with everything libpcap would leave to a user-space filter
// refused instead:
//   - a load at or past the header (offset ≥ 20, absolute or indexed, and the IP header
//     length load "ldxb 4*([k]&0xf)") is shifted down by 20. For an indexed load [x+k] with
//     k ≥ 20 this is exact whatever X holds: it reads the same byte as long as x+k ≥ 20;
//   - the header's protocol (ldh [0]), interface index (ld [4]) and packet type (ldb [10])
//     become the kernel's ancillary loads of the same values (SKF_AD_PROTOCOL,
//     SKF_AD_IFINDEX, SKF_AD_PKTTYPE). libpcap maps them whatever the load's size; here the
//     size must be the field's, or the value would differ;
//   - any other read of the header (hardware type, address, part of a field, an indexed
//     read with k < 20) cannot be done by the kernel: refused;
//   - "len" (the packet length) is refused: the kernel's is 20 bytes shorter than the one
//     the expression means on a LINUX_SLL2 packet, and libpcap leaves it unadjusted, so
//     tcpdump's own kernel filter and its file disagree on it: no answer is tcpdump's.
//   - a backward jump (libpcap's loop for "protochain") is refused: the kernel refuses
//     it, and tcpdump then filters in user space;
//   - an ancillary load already in the program (libpcap never emits one for LINUX_SLL2
//     without a live socket) is refused, so nothing unchecked reaches the kernel.
func cookedProgram(prog []bpf.RawInstruction) ([]bpf.RawInstruction, error) {
	out := make([]bpf.RawInstruction, len(prog))
	for i, ins := range prog {
		class, size, mode := ins.Op&bpfClassMask, ins.Op&bpfSizeMask, ins.Op&bpfModeMask
		if ins.Op == bpfJA && uint64(ins.K) >= uint64(len(prog)-i-1) {
			return nil, fmt.Errorf("instruction %d jumps backwards (a loop, as in protochain): "+
				"the kernel's filter has none (tcpdump runs such a filter in user space)", i)
		}
		if class != bpfLD && class != bpfLDX {
			out[i] = ins
			continue
		}
		switch {
		case mode == bpfLEN:
			return nil, fmt.Errorf("instruction %d reads the packet length (len, greater, less): "+
				"a cooked socket's kernel filter sees it %d bytes shorter than the LINUX_SLL2 packet", i, sll2HeaderLen)
		case mode != bpfABS && mode != bpfIND && mode != bpfMSH:
			out[i] = ins // immediate, scratch memory
			continue
		case ins.K >= skfAdOff:
			return nil, fmt.Errorf("instruction %d is already an ancillary load (k=%#x)", i, ins.K)
		case ins.K >= sll2HeaderLen:
			ins.K -= sll2HeaderLen
		case mode == bpfABS && class == bpfLD && ins.K == 0 && size == bpfH:
			ins.K = skfAdOff + skfAdProtocol
		case mode == bpfABS && class == bpfLD && ins.K == 4 && size == bpfW:
			ins.K = skfAdOff + skfAdIfIndex
		case mode == bpfABS && class == bpfLD && ins.K == 10 && size == bpfB:
			ins.K = skfAdOff + skfAdPktType
		default:
			return nil, fmt.Errorf("instruction %d reads the LINUX_SLL2 header at offset %d (%s), "+
				"which a cooked socket's kernel filter cannot see (only the protocol, interface index and packet type)",
				i, ins.K, sll2Field(ins.K))
		}
		out[i] = ins
	}
	return out, nil
}

// sll2Field names the LINUX_SLL2 header field at offset k (< 20).
func sll2Field(k uint32) string {
	switch {
	case k < 2:
		return "protocol"
	case k < 4:
		return "reserved"
	case k < 8:
		return "interface index"
	case k < 10:
		return "hardware type"
	case k == 10:
		return "packet type"
	case k == 11:
		return "address length"
	default:
		return "link-layer address"
	}
}

// snapProgram is the program of a capture without a filter: keep snaplen bytes of each
// packet (the kernel cuts the data after the header at the returned length).
func snapProgram(snaplen int) []bpf.RawInstruction {
	return []bpf.RawInstruction{{Op: 0x06, K: uint32(snaplen)}} // ret #snaplen
}
