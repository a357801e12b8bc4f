package h2conn

import (
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// blockReader decodes the header blocks of a connection (a HEADERS frame
// and its CONTINUATION frames) into one MetaHeadersFrame and one field
// slice that it reuses, where the framer's own (http2.Framer's
// ReadMetaHeaders) allocates both and the decoder's closure per block.
// What it hands out is valid until the next block: the roles read it
// in the read loop and keep only the strings. The checks are the
// framer's: header list size (SETTINGS_MAX_HEADER_LIST_SIZE, with
// Truncated past it and the connection closed when a peer keeps
// sending), field names and values (RFC 9113, section 8.2.1) and pseudo
// headers (section 8.3). Read loop only.
type blockReader struct {
	dec *hpack.Decoder
	max uint32 // SETTINGS_MAX_HEADER_LIST_SIZE announced
	mh  http2.MetaHeadersFrame

	// The block being read.
	reading                       bool
	headersRemain, trailersRemain uint32
	sawRegular                    bool
	invalid                       error
}

var (
	errPseudoAfterRegular = errors.New("h2conn: pseudo header after a regular header")
	errBadFieldName       = errors.New("h2conn: invalid header field name")
	errBadFieldValue      = errors.New("h2conn: invalid header field value")
	errBadPseudo          = errors.New("h2conn: unknown, repeated or mixed pseudo header")
)

func newBlockReader(max uint32) *blockReader {
	b := &blockReader{max: max}
	b.dec = hpack.NewDecoder(4096, b.emit)
	b.dec.SetMaxStringLength(int(min(max, 1<<31-1)))
	return b
}

// take passes frames other than HEADERS and CONTINUATION through, and
// returns a header block once its last frame is read (nil before). The
// framer has checked that CONTINUATION frames follow their HEADERS.
// Errors are the framer's: a StreamError for a block that is malformed
// but decoded, a ConnectionError when the decoder's state is lost or the
// peer keeps sending past the limit.
func (b *blockReader) take(f http2.Frame) (http2.Frame, error) {
	var frag []byte
	var ended bool
	switch f := f.(type) {
	case *http2.HeadersFrame:
		b.mh.HeadersFrame, b.mh.Fields, b.mh.Truncated = f, b.mh.Fields[:0], false
		b.reading, b.headersRemain, b.trailersRemain, b.sawRegular, b.invalid = true, b.max, b.max, false, nil
		b.dec.SetEmitEnabled(true)
		frag, ended = f.HeaderBlockFragment(), f.HeadersEnded()
	case *http2.ContinuationFrame:
		if !b.reading {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		frag, ended = f.HeaderBlockFragment(), f.HeadersEnded()
	default:
		return f, nil
	}
	// A fragment far over what the list may still hold, or any after the
	// block went over it or turned malformed, closes the connection: its
	// size is no longer tracked (the framer's rule).
	if int64(len(frag)) > 2*int64(b.headersRemain+b.trailersRemain) || b.invalid != nil {
		b.reading = false
		return nil, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if _, err := b.dec.Write(frag); err != nil {
		b.reading = false
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if !ended {
		return nil, nil
	}
	b.reading = false
	if err := b.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	id := b.mh.StreamID
	if b.invalid != nil {
		return nil, http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	if err := checkPseudos(b.mh.PseudoFields()); err != nil {
		return nil, http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return &b.mh, nil
}

// emit takes one decoded field.
func (b *blockReader) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		b.invalid = errBadFieldValue // the value may be a secret: not in the error
	}
	if strings.HasPrefix(hf.Name, ":") {
		if b.sawRegular {
			b.invalid = errPseudoAfterRegular
		}
	} else {
		b.sawRegular = true
		if !validWireName(hf.Name) {
			b.invalid = errBadFieldName
		}
	}
	if b.invalid != nil {
		b.dec.SetEmitEnabled(false)
		return
	}
	remain, size := &b.headersRemain, hf.Size()
	if hf.Name == "trailer" {
		// Each name a Trailer header declares costs a field's overhead
		// (the framer's count).
		n := uint32(strings.Count(hf.Value, ",") + 1)
		remain, size = &b.trailersRemain, uint32(len(hf.Value))-n+1+n*hpack.HeaderField{}.Size()
	}
	if size > *remain {
		b.dec.SetEmitEnabled(false)
		b.mh.Truncated = true
		b.headersRemain, b.trailersRemain = 0, 0
		return
	}
	*remain -= size
	b.mh.Fields = append(b.mh.Fields, hf)
}

// validWireName: a token without upper case (RFC 9113, section 8.2.1).
func validWireName(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if !httpguts.IsTokenRune(r) || 'A' <= r && r <= 'Z' {
			return false
		}
	}
	return true
}

// checkPseudos refuses unknown and repeated pseudo headers, and those of
// a request mixed with a response's (RFC 9113, section 8.3).
func checkPseudos(pf []hpack.HeaderField) error {
	var request, response bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return errBadPseudo
		}
		for _, prev := range pf[:i] {
			if hf.Name == prev.Name {
				return errBadPseudo
			}
		}
	}
	if request && response {
		return errBadPseudo
	}
	return nil
}
