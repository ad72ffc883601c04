package native

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Layout of a TPACKET_V3 ring (linux/if_packet.h). A block starts with tpacket_block_desc
// (version, offset_to_priv, then tpacket_hdr_v1); each packet in it starts with
// tpacket3_hdr, followed (at TPACKET_ALIGN(sizeof tpacket3_hdr)) by the packet's
// sockaddr_ll, and the packet's data starts tp_mac bytes after the tpacket3_hdr.
const (
	blockHdrOff   = 8                                                                 // tpacket_hdr_v1 in tpacket_block_desc
	tpacketAlign  = unix.TPACKET_ALIGNMENT                                            // 16
	sockaddrLLOff = (unix.SizeofTpacket3Hdr + tpacketAlign - 1) &^ (tpacketAlign - 1) // 48
	sizeofSLL     = 20                                                                // struct sockaddr_ll
	// frameHeadroom is what the kernel puts before a packet's data in a block (for a
	// SOCK_DGRAM socket: TPACKET_ALIGN(tpacket3_hdr + sockaddr_ll) + 16) and the block's
	// own header; a block must hold it besides the snaplen.
	frameHeadroom = 256
	// minBlockSize is the smallest ring block: the capture-bench probe's 256 KiB.
	minBlockSize = 256 << 10
)

// ringGeometry chooses the blocks of a ring of about ringBytes for snaplen: blocks are a
// power of two of at least minBlockSize that hold one whole packet of snaplen bytes (libpcap
// sizes TPACKET_V3 blocks the same way), and there are at least two of them.
func ringGeometry(ringBytes, snaplen int) (blockSize, blocks int) {
	blockSize = minBlockSize
	for blockSize < snaplen+frameHeadroom {
		blockSize <<= 1
	}
	blocks = max(ringBytes/blockSize, 2)
	return blockSize, blocks
}

// ring is an AF_PACKET SOCK_DGRAM socket with a TPACKET_V3 receive ring mapped in memory.
// Its methods other than close are for one goroutine (the Source's reader) unless noted.
type ring struct {
	fd        int
	mem       []byte
	blockSize int
	blocks    int
	tov       time.Duration

	cur  int  // the block being read
	left int  // packets of cur still to read; 0: cur is not (yet) handed to us
	next int  // offset in cur of the next packet
	done bool // every packet of cur was returned: release it at the next call
}

// newRing makes the socket, its filter and ring, and only then binds it to all interfaces
// and every protocol (tcpdump -i any), so that no packet reaches it unfiltered. It must run
// on the thread that entered the target network namespace: the socket captures in the
// namespace of the thread that creates it, and keeps it.
func newRing(ringBytes, snaplen int, tov time.Duration, prog []bpf.RawInstruction) (_ *ring, err error) {
	// Protocol 0: the socket takes no packet before bind.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	r := &ring{fd: fd, tov: tov}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return nil, fmt.Errorf("PACKET_VERSION TPACKET_V3: %w", err)
	}
	if err := attachFilter(fd, prog); err != nil {
		return nil, err
	}
	r.blockSize, r.blocks = ringGeometry(ringBytes, snaplen)
	const frameSize = 1 << 11 // V3 packs packets in a block; frames only satisfy the checks
	req := unix.TpacketReq3{
		Block_size:     uint32(r.blockSize),
		Block_nr:       uint32(r.blocks),
		Frame_size:     frameSize,
		Frame_nr:       uint32(r.blockSize / frameSize * r.blocks),
		Retire_blk_tov: uint32(tov / time.Millisecond),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, fmt.Errorf("PACKET_RX_RING of %d blocks of %d bytes: %w", r.blocks, r.blockSize, err)
	}
	r.mem, err = unix.Mmap(fd, 0, r.blockSize*r.blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map the ring: %w", err)
	}
	if err := r.bind(unix.ETH_P_ALL); err != nil { // every protocol
		return nil, err
	}
	return r, nil
}

// attachFilter sets the socket's classic BPF program.
func attachFilter(fd int, prog []bpf.RawInstruction) error {
	if len(prog) == 0 || len(prog) > maxInstructions {
		return fmt.Errorf("filter program of %d instructions", len(prog))
	}
	ins := make([]unix.SockFilter, len(prog))
	for i, p := range prog {
		ins[i] = unix.SockFilter{Code: p.Op, Jt: p.Jt, Jf: p.Jf, K: p.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attach the filter program: %w", err)
	}
	return nil
}

// bind binds the socket to every interface for protocol (host order). Protocol 0 takes the
// socket off the kernel's receive path: when bind returns no CPU is still delivering to it
// (the kernel unregisters the hook and waits for an RCU grace period), so the ring holds
// every packet the capture will ever get. Any goroutine may call it.
func (r *ring) bind(protocol uint16) error {
	sa := unix.SockaddrLinklayer{Protocol: htons(protocol), Ifindex: 0}
	if err := unix.Bind(r.fd, &sa); err != nil {
		return fmt.Errorf("bind the socket (protocol %#x): %w", protocol, err)
	}
	return nil
}

// stats reads the kernel's counters since the last call (PACKET_STATISTICS resets them):
// packets that passed the filter, including the dropped ones, and the drops (no room in
// the ring). Any goroutine may call it, but not concurrently with close.
func (r *ring) stats() (received, dropped uint64, err error) {
	st, err := unix.GetsockoptTpacketStatsV3(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0, 0, fmt.Errorf("PACKET_STATISTICS: %w", err)
	}
	return uint64(st.Packets), uint64(st.Drops), nil
}

// block returns the header of block i.
func (r *ring) block(i int) *unix.TpacketHdrV1 {
	return (*unix.TpacketHdrV1)(unsafe.Pointer(&r.mem[i*r.blockSize+blockHdrOff]))
}

// ready reports whether the current block is handed to user space (the kernel publishes
// the status with a store-release after filling it).
func (r *ring) ready() bool {
	return atomic.LoadUint32(&r.block(r.cur).Block_status)&unix.TP_STATUS_USER != 0
}

// packet is one packet of the ring, valid until the block it is in is released.
type packet struct {
	sec, nsec uint32
	snaplen   int // bytes in the ring, from data
	length    int // bytes on the wire, without a link-layer header
	data      []byte
	protocol  uint16 // sll_protocol: the EtherType (0x0800 for IPv4)
	ifindex   int32
	hatype    uint16
	pkttype   uint8
	halen     uint8
	addr      [8]byte
}

// nextPacket returns the next packet of the ring if one is ready; p.data is valid until the
// next call. A block goes back to the kernel at the call after the one that returned its
// last packet: once released, the kernel may write it again at once (a full ring waits on
// exactly that block).
func (r *ring) nextPacket(p *packet) (bool, error) {
	if r.done {
		r.release()
	}
	if r.left == 0 {
		if !r.ready() {
			return false, nil
		}
		b := r.block(r.cur)
		r.left, r.next = int(b.Num_pkts), int(b.Offset_to_first_pkt)
		if r.left == 0 { // a block closed empty: hand it back
			r.release()
			return false, nil
		}
	}
	base := r.cur * r.blockSize
	off := base + r.next
	if r.next < 0 || off+sockaddrLLOff+sizeofSLL > base+r.blockSize {
		return false, fmt.Errorf("corrupt ring: packet at offset %d of a %d-byte block", r.next, r.blockSize)
	}
	h := (*unix.Tpacket3Hdr)(unsafe.Pointer(&r.mem[off]))
	start, end := off+int(h.Mac), off+int(h.Mac)+int(h.Snaplen)
	if end > base+r.blockSize || int(h.Mac) < sockaddrLLOff+sizeofSLL {
		return false, fmt.Errorf("corrupt ring: packet data at %d+%d of a %d-byte block", int(h.Mac), h.Snaplen, r.blockSize)
	}
	sll := r.mem[off+sockaddrLLOff : off+sockaddrLLOff+sizeofSLL]
	*p = packet{
		sec:      h.Sec,
		nsec:     h.Nsec,
		snaplen:  int(h.Snaplen),
		length:   int(h.Len),
		data:     r.mem[start:end:end],
		protocol: binary.BigEndian.Uint16(sll[2:4]),
		ifindex:  int32(binary.NativeEndian.Uint32(sll[4:8])),
		hatype:   binary.NativeEndian.Uint16(sll[8:10]),
		pkttype:  sll[10],
		halen:    sll[11],
	}
	copy(p.addr[:], sll[12:20])
	r.left--
	if r.left > 0 {
		r.next += int(h.Next_offset)
	} else {
		r.done = true
	}
	return true, nil
}

// release hands the current block back to the kernel and moves to the next one.
func (r *ring) release() {
	atomic.StoreUint32(&r.block(r.cur).Block_status, unix.TP_STATUS_KERNEL)
	r.cur = (r.cur + 1) % r.blocks
	r.left, r.next, r.done = 0, 0, false
}

// close unmaps the ring and closes the socket.
func (r *ring) close() {
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
		r.mem = nil
	}
	if r.fd >= 0 {
		_ = unix.Close(r.fd)
		r.fd = -1
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
