package tcpdump_test

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/tcpdump"
)

// fakeTcpdump writes an executable shell script standing in for tcpdump.
func fakeTcpdump(t *testing.T, script string) string {
	t.Helper()
	path := t.TempDir() + "/tcpdump"
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

// pcapHeader is a pcap global header (LINUX_SLL2, snaplen 262144) in printf's octal.
const pcapHeader = `\324\303\262\241\002\000\004\000\000\000\000\000\000\000\000\000\000\000\004\000\024\001\000\000`

// pcapRecord is one pcap record of the 4 bytes "podc" (little-endian, like pcapHeader).
const pcapRecord = `\001\000\000\000\000\000\000\000\004\000\000\000\004\000\000\000podc`

func TestOpenTimesOut(t *testing.T) {
	needRoot(t)
	p := newNetnsPair(t)
	e, err := tcpdump.New(tcpdump.Config{
		TcpdumpPath: fakeTcpdump(t, "echo 'hanging before the header' >&2; exec sleep 60"),
		OpenTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = e.Open(context.Background(), capture.Target{PID: p.sleeperPID}, capture.SourceOptions{})
	if err == nil || !strings.Contains(err.Error(), "no pcap header within 300ms") || !strings.Contains(err.Error(), "hanging before the header") {
		t.Fatalf("Open: %v; want a timeout with the process' stderr", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open took %v", d)
	}
}

func TestCloseKillsWhatIgnoresSIGTERM(t *testing.T) {
	needRoot(t)
	p := newNetnsPair(t)
	e, err := tcpdump.New(tcpdump.Config{
		TcpdumpPath: fakeTcpdump(t, "trap '' TERM; printf '"+pcapHeader+"'; exec sleep 60"),
		StopTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	src := open(t, e, context.Background(), capture.Target{PID: p.sleeperPID}, capture.SourceOptions{})
	if src.LinkType() != layers.LinkTypeLinuxSLL2 {
		t.Errorf("link type %v", src.LinkType())
	}
	start := time.Now()
	if err := src.Close(); err != nil {
		t.Errorf("Close: %v, want nil (we stopped it)", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("Close took %v, want SIGKILL 300ms after SIGTERM", d)
	}
	if st := processState(src.PID()); st != "" {
		t.Errorf("process %d still there after Close (state %s)", src.PID(), st)
	}
}

// A stream torn within a record is the end of the capture after Stop (tcpdump was killed
// at StopTimeout: what it wrote before is read) and an error otherwise (it died on its own).
func TestTornRecordAtTheEnd(t *testing.T) {
	needRoot(t)
	p := newNetnsPair(t)
	for _, tc := range []struct {
		name    string
		script  string
		stop    bool
		wantEOF bool
	}{
		{"stopped, killed within a header", "trap '' TERM; printf '" + pcapHeader + pcapRecord + `\002\000\000\000\000\000` + "'; exec sleep 60", true, true},
		{"stopped, killed before a record's data", "trap '' TERM; printf '" + pcapHeader + pcapRecord + `\002\000\000\000\000\000\000\000\004\000\000\000\004\000\000\000` + "'; exec sleep 60", true, true},
		{"died within a header", "printf '" + pcapHeader + pcapRecord + `\002\000\000\000\000\000` + "'", false, false},
		{"died before a record's data", "printf '" + pcapHeader + pcapRecord + `\002\000\000\000\000\000\000\000\004\000\000\000\004\000\000\000` + "'", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := tcpdump.New(tcpdump.Config{TcpdumpPath: fakeTcpdump(t, tc.script), StopTimeout: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			src := open(t, e, context.Background(), capture.Target{PID: p.sleeperPID}, capture.SourceOptions{})
			if tc.stop {
				src.Stop()
			}
			if _, data, err := src.ReadPacket(); err != nil || string(data) != "podc" {
				t.Fatalf("ReadPacket = %q, %v; want the whole record before the torn one", data, err)
			}
			_, _, err = src.ReadPacket()
			if gotEOF := errors.Is(err, io.EOF); gotEOF != tc.wantEOF || err == nil {
				t.Fatalf("ReadPacket at the torn record: %v; want io.EOF %v", err, tc.wantEOF)
			}
			t.Logf("ReadPacket at the torn record: %v", err)
			cerr := src.Close()
			if tc.stop && cerr != nil {
				t.Errorf("Close: %v, want nil (we stopped it)", cerr)
			}
			if !tc.stop && cerr == nil {
				t.Error("Close: nil, want the process' own end")
			}
		})
	}
}
