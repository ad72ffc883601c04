package native

import (
	"strings"
	"testing"

	"golang.org/x/net/bpf"
)

// Programs as `tcpdump -ddd -y LINUX_SLL2` prints them, adjusted for the cooked socket.
func TestCookedProgram(t *testing.T) {
	const ad = skfAdOff
	ret := bpf.RawInstruction{Op: 0x06, K: 262144}
	for _, tc := range []struct {
		name    string
		in      []bpf.RawInstruction
		want    []bpf.RawInstruction // nil: refused
		wantErr string
	}{
		{"ip: protocol", []bpf.RawInstruction{{Op: 0x28, K: 0}, {Op: 0x15, Jf: 1, K: 0x800}, ret, {Op: 0x06}},
			[]bpf.RawInstruction{{Op: 0x28, K: ad + skfAdProtocol}, {Op: 0x15, Jf: 1, K: 0x800}, ret, {Op: 0x06}}, ""},
		{"ifindex", []bpf.RawInstruction{{Op: 0x20, K: 4}}, []bpf.RawInstruction{{Op: 0x20, K: ad + skfAdIfIndex}}, ""},
		{"outbound: packet type", []bpf.RawInstruction{{Op: 0x30, K: 10}}, []bpf.RawInstruction{{Op: 0x30, K: ad + skfAdPktType}}, ""},
		{"payload loads shift", []bpf.RawInstruction{{Op: 0x30, K: 29}, {Op: 0xb1, K: 20}, {Op: 0x48, K: 22}, {Op: 0x20, K: 36}},
			[]bpf.RawInstruction{{Op: 0x30, K: 9}, {Op: 0xb1, K: 0}, {Op: 0x48, K: 2}, {Op: 0x20, K: 16}}, ""},
		{"immediate and memory loads stay", []bpf.RawInstruction{{Op: 0x00, K: 3}, {Op: 0x01, K: 40}, {Op: 0x60, K: 1}, {Op: 0x61, K: 2}},
			[]bpf.RawInstruction{{Op: 0x00, K: 3}, {Op: 0x01, K: 40}, {Op: 0x60, K: 1}, {Op: 0x61, K: 2}}, ""},
		{"byte of the protocol", []bpf.RawInstruction{{Op: 0x30, K: 0}}, nil, "offset 0 (protocol)"},
		{"word at the protocol", []bpf.RawInstruction{{Op: 0x20, K: 0}}, nil, "offset 0 (protocol)"},
		{"half of the ifindex", []bpf.RawInstruction{{Op: 0x28, K: 4}}, nil, "interface index"},
		{"hardware type", []bpf.RawInstruction{{Op: 0x28, K: 8}}, nil, "hardware type"},
		{"address", []bpf.RawInstruction{{Op: 0x20, K: 12}}, nil, "link-layer address"},
		{"indexed read in the header", []bpf.RawInstruction{{Op: 0x50, K: 10}}, nil, "offset 10"},
		{"header length of a header byte", []bpf.RawInstruction{{Op: 0xb1, K: 2}}, nil, "offset 2"},
		{"len", []bpf.RawInstruction{{Op: 0x80}}, nil, "length"},
		{"len into X", []bpf.RawInstruction{{Op: 0x81}}, nil, "length"},
		{"ancillary load", []bpf.RawInstruction{{Op: 0x20, K: ad + 0x2c}}, nil, "ancillary"},
		{"loop", []bpf.RawInstruction{{Op: 0x30, K: 30}, {Op: 0x05, K: 0xfffffffe}, ret}, nil, "backwards"},
		{"jump past the end", []bpf.RawInstruction{{Op: 0x05, K: 1}, ret}, nil, "backwards"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cookedProgram(tc.in)
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("cookedProgram = %v, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range tc.want {
				if got[i] != tc.want[i] {
					t.Errorf("instruction %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestParseDDD(t *testing.T) {
	prog, err := parseDDD("4\n40 0 0 0\n21 0 1 2048\n6 0 0 262144\n6 0 0 0\n")
	if err != nil || len(prog) != 4 || prog[1] != (bpf.RawInstruction{Op: 21, Jf: 1, K: 2048}) {
		t.Fatalf("parseDDD = %v, %v", prog, err)
	}
	for _, bad := range []string{"", "2\n6 0 0 0\n", "1\n6 0 0\n", "1\n6 0 0 x\n", "1\n70000 0 0 0\n", "0\n"} {
		if prog, err := parseDDD(bad); err == nil {
			t.Errorf("parseDDD(%q) = %v, want an error", bad, prog)
		}
	}
}
