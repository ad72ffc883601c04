package plugin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// ErrPcapng is returned by MergePcap for a pcapng input: merging pcapng would have to keep
// each section's interfaces and comments (an alert capture's trigger), which this plugin does
// not do; `mergecap` from Wireshark does.
var ErrPcapng = errors.New("pcapng files are not merged by kubectl podcap: download them without --merge and merge them with mergecap")

var pcapngMagic = []byte{0x0a, 0x0d, 0x0d, 0x0a}

// MergeResult says what MergePcap wrote.
type MergeResult struct {
	Packets int
	// Truncated are the indexes of inputs whose last record was cut short (a file still being
	// written when it was copied); their complete records are merged.
	Truncated []int
}

// mergeInput is one input of MergePcap with its next packet.
type mergeInput struct {
	r    *pcapgo.Reader
	ci   gopacket.CaptureInfo
	data []byte
	done bool
	// truncated: the input ended inside a record
	truncated bool
}

// MergePcap writes the packets of the pcap inputs to w as one pcap file, in time order (a
// packet of an earlier input first on equal times): one file header with the inputs' link
// type, the largest snaplen, and nanosecond timestamps if any input has them. Inputs of
// different link types are refused, as are pcapng inputs (ErrPcapng).
func MergePcap(w io.Writer, inputs ...io.Reader) (MergeResult, error) {
	var res MergeResult
	ins := make([]*mergeInput, len(inputs))
	var snaplen uint32
	nanos := false
	for i, in := range inputs {
		br := bufio.NewReaderSize(in, 1<<16)
		if magic, _ := br.Peek(4); bytes.Equal(magic, pcapngMagic) {
			return res, fmt.Errorf("file %d: %w", i+1, ErrPcapng)
		}
		r, err := pcapgo.NewReader(br)
		if err != nil {
			return res, fmt.Errorf("file %d: %w", i+1, err)
		}
		if i > 0 && r.LinkType() != ins[0].r.LinkType() {
			return res, fmt.Errorf("files have different link types (%s in file 1, %s in file %d): not merged",
				ins[0].r.LinkType(), r.LinkType(), i+1)
		}
		snaplen = max(snaplen, r.Snaplen())
		nanos = nanos || r.Resolution() == gopacket.TimestampResolutionNanosecond
		ins[i] = &mergeInput{r: r}
	}
	if len(ins) == 0 {
		return res, errors.New("no files to merge")
	}
	pw := pcapgo.NewWriter(w)
	if nanos {
		pw = pcapgo.NewWriterNanos(w)
	}
	if err := pw.WriteFileHeader(snaplen, layers.LinkType(ins[0].r.LinkType())); err != nil {
		return res, fmt.Errorf("write header: %w", err)
	}
	for i, in := range ins {
		if err := in.next(); err != nil {
			return res, fmt.Errorf("file %d: %w", i+1, err)
		}
	}
	for {
		min := -1
		for i, in := range ins {
			if !in.done && (min < 0 || in.ci.Timestamp.Before(ins[min].ci.Timestamp)) {
				min = i
			}
		}
		if min < 0 {
			break
		}
		in := ins[min]
		if err := pw.WritePacket(in.ci, in.data); err != nil {
			return res, fmt.Errorf("write packet: %w", err)
		}
		res.Packets++
		if err := in.next(); err != nil {
			return res, fmt.Errorf("file %d: %w", min+1, err)
		}
	}
	for i, in := range ins {
		if in.truncated {
			res.Truncated = append(res.Truncated, i)
		}
	}
	return res, nil
}

// next reads the input's next packet; at the end it sets done (and truncated when the last
// record was cut short).
func (in *mergeInput) next() error {
	data, ci, err := in.r.ReadPacketData()
	switch {
	case err == nil:
		in.ci, in.data = ci, data
		return nil
	case errors.Is(err, io.EOF):
		in.done = true
		return nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		in.done, in.truncated = true, true
		return nil
	}
	return err
}
