package capture

import (
	"encoding/binary"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// pcapng, as a ring with FormatPcapng writes it (draft-ietf-opsawg-pcapng): every file is a
// complete pcapng file of one section, little endian: a Section Header Block carrying the
// capture's comments, one Interface Description Block (the stream's link type and snaplen,
// default microsecond timestamps like the pcap ring's), then one Enhanced Packet Block per
// packet. gopacket's pcapgo.NgWriter is not used: it writes one section comment at most and
// buffers on its own, where the ring accounts every byte it writes.

// pcapng block types, options and sizes.
const (
	ngBlockSHB       = 0x0A0D0D0A
	ngBlockIDB       = 0x00000001
	ngBlockEPB       = 0x00000006
	ngByteOrderMagic = 0x1A2B3C4D
	ngVersionMajor   = 1
	ngVersionMinor   = 0

	ngOptEndOfOpt = 0
	ngOptComment  = 1 // opt_comment: several allowed
	ngOptHardware = 2 // shb_hardware
	ngOptOS       = 3 // shb_os
	ngOptUserAppl = 4 // shb_userappl

	ngSHBFixedLen = 28 // type, length, byte-order magic, version, section length, trailing length
	ngIDBLen      = 20 // type, length, link type, reserved, snaplen, trailing length; no options
	ngEPBHeadLen  = 28 // type, length, interface, timestamp high and low, captured and original length
	ngTrailerLen  = 4  // the block's total length, repeated
	// ngMaxRecordOverhead is the most an EPB adds to a packet's data: its fields and the
	// padding of the data to 32 bits.
	ngMaxRecordOverhead = ngEPBHeadLen + ngTrailerLen + 3
)

// Bounds of a section header. Its comments come from policy and alert data (a rule's reason,
// alert names, generatorURLs): they are cut to these, so a file's header stays small and
// WorstCaseBytes stays a bound.
const (
	// MaxSectionOption is the most bytes of one comment (or of shb_hardware, shb_os,
	// shb_userappl); a longer one is cut at a character boundary and ends in "…".
	MaxSectionOption = 1024
	// MaxSectionComments is the most comments of a section header.
	MaxSectionComments = 32
	// MaxSectionCommentBytes is the most bytes of all comments of a section header together.
	MaxSectionCommentBytes = 8192

	// ngMaxHeaderLen bounds what a pcapng file holds before its first packet: an SHB with
	// every option at its bound (each padded, with its 4-byte header, and the end of options)
	// and the IDB.
	ngMaxHeaderLen = ngSHBFixedLen + MaxSectionComments*(4+3) + MaxSectionCommentBytes +
		3*(4+MaxSectionOption+3) + 4 + ngIDBLen
)

// SectionInfo is what a pcapng ring writes in the section header of each file. The ring
// bounds it (control characters become spaces, invalid UTF-8 is replaced, every field and the
// comments together are cut to the bounds above); a pcap ring ignores it.
type SectionInfo struct {
	Comments []string // opt_comment, one each; Wireshark and capinfos show them as "Capture comment"
	Hardware string   // shb_hardware
	OS       string   // shb_os
	UserAppl string   // shb_userappl: the application that wrote the file
}

// bounded returns s cut to the section header's bounds.
func (s SectionInfo) bounded() SectionInfo {
	return SectionInfo{
		Comments: boundComments(s.Comments, MaxSectionComments, MaxSectionCommentBytes),
		Hardware: cleanOption(s.Hardware, MaxSectionOption),
		OS:       cleanOption(s.OS, MaxSectionOption),
		UserAppl: cleanOption(s.UserAppl, MaxSectionOption),
	}
}

const ellipsis = "…"

// cleanOption makes v one line of valid UTF-8 without control characters, at most max bytes
// (cut at a character boundary, ending in "…" when cut), without surrounding spaces.
func cleanOption(v string, max int) string {
	v = strings.ToValidUTF8(v, "\uFFFD")
	v = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, v)
	v = strings.TrimSpace(v)
	if len(v) <= max {
		return v
	}
	cut := max - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return strings.TrimSpace(v[:cut]) + ellipsis
}

// boundComments cleans each comment (cleanOption), drops empty ones and keeps the first
// ones, at most n of at most total bytes together (n >= 1, total >= 128); when some do not
// fit, the last one says how many were left out.
func boundComments(in []string, n, total int) []string {
	var clean []string
	for _, c := range in {
		if c = cleanOption(c, MaxSectionOption); c != "" {
			clean = append(clean, c)
		}
	}
	k, used := 0, 0
	for k < len(clean) && k < n && used+len(clean[k]) <= total {
		used += len(clean[k])
		k++
	}
	if k == len(clean) {
		return clean
	}
	// not all fit: keep fewer, so that the note of how many were left out fits too
	for k > 0 && (k+1 > n || used+len(omitted(len(clean)-k)) > total) {
		k--
		used -= len(clean[k])
	}
	return append(clean[:k:k], omitted(len(clean)-k))
}

func omitted(n int) string {
	return "(" + strconv.Itoa(n) + " more comment(s) left out: a header's comments are bounded)"
}

// ngHeader returns the beginning of a pcapng file: the section header with s's options (s
// already bounded) and the interface of the stream.
func ngHeader(s SectionInfo, lt layers.LinkType, snaplen uint32) []byte {
	le := binary.LittleEndian
	b := make([]byte, 0, 512)
	b = le.AppendUint32(b, ngBlockSHB)
	b = le.AppendUint32(b, 0) // total length, set below
	b = le.AppendUint32(b, ngByteOrderMagic)
	b = le.AppendUint16(b, ngVersionMajor)
	b = le.AppendUint16(b, ngVersionMinor)
	b = le.AppendUint64(b, ^uint64(0)) // section length: not known while streaming
	opts := len(b)
	for _, c := range s.Comments {
		b = appendOption(b, ngOptComment, c)
	}
	b = appendOption(b, ngOptHardware, s.Hardware)
	b = appendOption(b, ngOptOS, s.OS)
	b = appendOption(b, ngOptUserAppl, s.UserAppl)
	if len(b) > opts {
		b = le.AppendUint32(b, ngOptEndOfOpt) // code and length 0
	}
	b = le.AppendUint32(b, uint32(len(b)+ngTrailerLen))
	le.PutUint32(b[4:8], uint32(len(b)))

	b = le.AppendUint32(b, ngBlockIDB)
	b = le.AppendUint32(b, ngIDBLen)
	b = le.AppendUint16(b, uint16(lt))
	b = le.AppendUint16(b, 0) // reserved
	b = le.AppendUint32(b, snaplen)
	// no options: if_tsresol's default, microseconds, is the pcap ring's resolution
	return le.AppendUint32(b, ngIDBLen)
}

// appendOption appends option code with value v, padded to 32 bits; an empty v is no option.
func appendOption(b []byte, code uint16, v string) []byte {
	if v == "" {
		return b
	}
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	return append(b, make([]byte, pad4(len(v)))...)
}

// pad4 is the padding that takes n bytes to a multiple of 4.
func pad4(n int) int { return -n & 3 }

// ngPacketHead fills h (ngEPBHeadLen bytes) with the head of the Enhanced Packet Block of a
// packet and tail (at most 7 bytes) with its padding and trailing length; it returns the
// block's tail.
func ngPacketHead(h []byte, tail *[7]byte, ci gopacket.CaptureInfo) []byte {
	le := binary.LittleEndian
	pad := pad4(ci.CaptureLength)
	total := uint32(ngEPBHeadLen + ci.CaptureLength + pad + ngTrailerLen)
	ts := uint64(ci.Timestamp.UnixMicro())
	le.PutUint32(h[0:4], ngBlockEPB)
	le.PutUint32(h[4:8], total)
	le.PutUint32(h[8:12], 0) // the file's one interface
	le.PutUint32(h[12:16], uint32(ts>>32))
	le.PutUint32(h[16:20], uint32(ts))
	le.PutUint32(h[20:24], uint32(ci.CaptureLength))
	le.PutUint32(h[24:28], uint32(ci.Length))
	t := tail[:pad+ngTrailerLen]
	clear(t[:pad])
	le.PutUint32(t[pad:], total)
	return t
}
