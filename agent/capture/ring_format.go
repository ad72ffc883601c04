package capture

import (
	"github.com/gopacket/gopacket"
)

// The bytes a Ring writes, in its format: the file header and one record per packet.

// fileHeaderLocked returns the beginning of a new file of the ring: pcap's global header or
// pcapng's section and interface blocks.
func (r *Ring) fileHeaderLocked() []byte {
	if r.ng {
		return ngHeader(r.section, r.linkType, r.snaplen)
	}
	return pcapFileHeader(r.linkType, r.snaplen)
}

// writeRecordLocked writes one packet's record into the buffer and returns its size. An
// error is the buffer's write error, not yet wrapped.
func (r *Ring) writeRecordLocked(ci gopacket.CaptureInfo, data []byte) (int64, error) {
	if r.ng {
		tail := ngPacketHead(r.hdr[:], &r.tail, ci)
		if _, err := r.bw.Write(r.hdr[:ngEPBHeadLen]); err != nil {
			return 0, err
		}
		if _, err := r.bw.Write(data); err != nil {
			return 0, err
		}
		if _, err := r.bw.Write(tail); err != nil {
			return 0, err
		}
		return int64(ngEPBHeadLen + len(data) + len(tail)), nil
	}
	putPcapRecordHeader(r.hdr[:], ci, ci.CaptureLength)
	if _, err := r.bw.Write(r.hdr[:pcapRecordHeaderLen]); err != nil {
		return 0, err
	}
	if _, err := r.bw.Write(data); err != nil {
		return 0, err
	}
	return int64(pcapRecordHeaderLen + len(data)), nil
}

// WorstCaseBytes is the most a ring of files files of fileSize bytes may hold for a stream of
// snaplen, whatever its format (WorstCaseFormatBytes of the larger). The capture manager
// reserves it against the node's byte budget, and one file of it against the free-space floor.
func WorstCaseBytes(files int, fileSize int64, snaplen int) int64 {
	return max(WorstCaseFormatBytes(FormatPcap, files, fileSize, snaplen),
		WorstCaseFormatBytes(FormatPcapng, files, fileSize, snaplen))
}

// WorstCaseFormatBytes is the most a ring of format may hold: a file is rotated before a
// packet once it exceeds fileSize, so it ends at most one record (its framing and snaplen
// bytes) past fileSize, or past its own header if that alone is larger. pcap frames a record
// with 16 bytes after a 24-byte header; pcapng with up to 35 (the EPB's fields, padding to 32
// bits) after a header of at most ngMaxHeaderLen (its comments are bounded).
func WorstCaseFormatBytes(format string, files int, fileSize int64, snaplen int) int64 {
	header, record := int64(pcapFileHeaderLen), int64(pcapRecordHeaderLen)
	if format == FormatPcapng {
		header, record = ngMaxHeaderLen, ngMaxRecordOverhead
	}
	return int64(files) * (max(fileSize, header) + record + int64(snaplen))
}
