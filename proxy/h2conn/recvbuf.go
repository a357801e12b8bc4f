package h2conn

// recvBuf holds a stream's received body bytes not yet read: pooled
// chunks of dataChunk bytes, read in the order written. A body larger
// than one chunk takes more chunks rather than growing one slice, which
// would copy all it holds at each growth and leave a large array to the
// collector (the memmove that showed at 64 KiB bodies: bench/README.md,
// "Sidecar-to-sidecar transport").
type recvBuf struct {
	head []byte   // the chunk read from, from off
	off  int      // read position in head
	more [][]byte // chunks after head
	n    int      // bytes held
}

// len is how many bytes wait to be read.
func (b *recvBuf) len() int { return b.n }

// write appends a copy of p.
func (b *recvBuf) write(p []byte) {
	b.n += len(p)
	for len(p) > 0 {
		last := &b.head
		if len(b.more) > 0 {
			last = &b.more[len(b.more)-1]
		}
		if *last == nil {
			*last = getData(nil)
		} else if len(*last) == cap(*last) {
			b.more = append(b.more, getData(nil))
			last = &b.more[len(b.more)-1]
		}
		k := min(len(p), cap(*last)-len(*last))
		*last = append(*last, p[:k]...)
		p = p[k:]
	}
}

// read copies up to len(p) bytes into p, returning chunks read to their
// end to the pool but the last, which is kept for the next write.
func (b *recvBuf) read(p []byte) int {
	total := 0
	for len(p) > 0 && b.n > 0 {
		k := copy(p, b.head[b.off:])
		b.off += k
		b.n -= k
		total += k
		p = p[k:]
		if b.off < len(b.head) {
			break
		}
		if len(b.more) == 0 {
			b.head, b.off = b.head[:0], 0
			break
		}
		putData(b.head)
		b.head, b.off = b.more[0], 0
		b.more[0] = nil
		b.more = b.more[1:]
		if len(b.more) == 0 {
			b.more = nil
		}
	}
	return total
}

// free returns every chunk to the pool; what was unread is gone.
func (b *recvBuf) free() {
	putData(b.head)
	for _, c := range b.more {
		putData(c)
	}
	*b = recvBuf{}
}
