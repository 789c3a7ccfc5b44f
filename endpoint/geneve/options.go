package geneve

import "encoding/binary"

// Option is one Geneve option TLV (RFC 8926 §3.5):
//
//	|          Option Class         |      Type     |R|R|R| Length  |
//	|                 Variable-Length Option Data                   |
type Option struct {
	// Class is the option namespace, from the IANA "Geneve Option Class"
	// registry (0xFF00-0xFFFF is for experimental use).
	Class uint16
	// Type is the option type within Class; its high bit is the critical
	// bit (OptionCritical).
	Type uint8
	// Data is the option data: a multiple of 4 bytes, at most
	// MaxOptionDataLen, possibly empty. From an OptionIterator it aliases
	// the header bytes.
	Data []byte
}

// Critical reports whether the option's critical bit (the high bit of
// Type, RFC 8926 §3.5) is set. An endpoint must drop a packet carrying a
// critical option that it does not recognise (§3.5.1).
func (o Option) Critical() bool { return o.Type&OptionCritical != 0 }

// Len returns the encoded length of the option: its 4-byte header plus its
// data.
func (o Option) Len() int { return OptionHeaderLen + len(o.Data) }

// OptionIterator walks a sequence of raw option TLVs without allocating.
// Create it with Options or Header.OptionIter; the zero value yields no
// options.
type OptionIterator struct {
	raw       []byte
	malformed bool
}

// Options returns an iterator over the raw option TLVs in raw, such as
// Header.Options.
func Options(raw []byte) OptionIterator { return OptionIterator{raw: raw} }

// OptionIter returns an iterator over h.Options.
func (h *Header) OptionIter() OptionIterator { return Options(h.Options) }

// Next returns the next option and true, or false when no option is left.
// The Data of the returned option aliases the raw bytes. On raw bytes that
// were not validated, iteration stops at the first option that does not
// fit, and Err reports it; options from a successful Decode always iterate
// to the end exactly.
func (it *OptionIterator) Next() (Option, bool) {
	if len(it.raw) == 0 {
		return Option{}, false
	}
	if len(it.raw) < OptionHeaderLen {
		it.raw, it.malformed = nil, true
		return Option{}, false
	}
	end := OptionHeaderLen + int(it.raw[3]&optLenMask5)*4
	if end > len(it.raw) {
		it.raw, it.malformed = nil, true
		return Option{}, false
	}
	o := Option{
		Class: binary.BigEndian.Uint16(it.raw[0:2]),
		Type:  it.raw[2],
		Data:  it.raw[OptionHeaderLen:end:end],
	}
	it.raw = it.raw[end:]
	return o, true
}

// Err returns ErrOptionLength if iteration stopped on an option that
// overruns the raw bytes (or on 1-3 stray trailing bytes), and nil
// otherwise.
func (it *OptionIterator) Err() error {
	if it.malformed {
		return ErrOptionLength
	}
	return nil
}

// AppendOption appends the encoding of o to dst, with the R bits zero
// (RFC 8926 §3.5), and returns the extended slice. len(o.Data) must be a
// multiple of 4 and at most MaxOptionDataLen (ErrOptionDataSize); dst is
// returned unchanged on error. AppendOption does not check the total: a
// Header whose Options exceed MaxOptionsLen fails to Encode.
func AppendOption(dst []byte, o Option) ([]byte, error) {
	if len(o.Data)%4 != 0 || len(o.Data) > MaxOptionDataLen {
		return dst, ErrOptionDataSize
	}
	dst = binary.BigEndian.AppendUint16(dst, o.Class)
	dst = append(dst, o.Type, byte(len(o.Data)/4))
	return append(dst, o.Data...), nil
}

// ValidateOptions checks that raw is a well-formed options area, the same
// structural check that Decode applies to the Opt Len bytes after the base
// header: ErrOptionsSize if len(raw) is not a multiple of 4 or exceeds
// MaxOptionsLen; ErrOptionLength if an option's 4-byte header or its Length
// words overrun raw, so that the option lengths do not add up exactly to
// len(raw) (RFC 8926 §3.5). An empty raw is valid. The R bits are ignored.
func ValidateOptions(raw []byte) error {
	_, err := scanOptions(raw)
	return err
}

// scanOptions validates raw (see ValidateOptions) and reports whether any
// option has the critical bit set.
func scanOptions(raw []byte) (critical bool, err error) {
	if len(raw)%4 != 0 || len(raw) > MaxOptionsLen {
		return false, ErrOptionsSize
	}
	// len(raw) is a multiple of 4, so fewer than 4 bytes left means none.
	for i := 0; i < len(raw); {
		critical = critical || raw[i+2]&OptionCritical != 0
		i += OptionHeaderLen + int(raw[i+3]&optLenMask5)*4
		if i > len(raw) {
			return false, ErrOptionLength
		}
	}
	return critical, nil
}
