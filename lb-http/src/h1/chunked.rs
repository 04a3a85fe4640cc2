//! The chunked transfer coding: an incremental, sans-I/O decoder that
//! validates chunk framing byte by byte and hands out data spans, and the
//! encoder helpers used to re-emit chunks. Chunk extensions are dropped;
//! trailer fields are validated and dropped (not forwarded).
//!
//! The decoder is strict (RFC 9112 section 7.1): a chunk size is one or more
//! hex digits (no sign, no `0x`, no whitespace before or inside it; leading
//! zeros are fine) whose value fits in 64 bits; whitespace after the size is
//! only accepted before a `;` extension; every line ends with CRLF (a bare LF
//! or CR is an error); chunk data must be followed by CRLF; a trailer line is
//! a token, a colon and a value without control characters (other than HTAB).

use bytes::{Buf, BytesMut};

/// Longest chunk-size line (size, extensions) accepted.
pub const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section accepted.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Malformed chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked encoding: {0}")]
pub struct ChunkError(pub &'static str);

/// What the decoder found next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// The first `n` bytes of the buffer are body data; the caller must
    /// consume (advance past) exactly them before decoding again.
    Data(usize),
    /// The body ended (last chunk and trailers consumed).
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// Incremental chunked-body decoder.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    remaining: u64,
    declared: u64,
    digit_seen: bool,
    line: usize,
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `b` may appear in a field name (RFC 9110 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `b` may appear in a field value (HTAB, visible ASCII, SP, obs-text).
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Size,
            remaining: 0,
            declared: 0,
            digit_seen: false,
            line: 0,
            trailers: 0,
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The sum of the chunk sizes announced so far (including the chunk
    /// whose data is being read), known before that data arrives.
    pub fn declared(&self) -> u64 {
        self.declared
    }

    /// Consumes framing bytes from `buf` until body data or the end is found.
    /// `Ok(None)` means `buf` was used up and more input is needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, ChunkError> {
        let (used, found) = self.advance(buf)?;
        buf.advance(used);
        Ok(found)
    }

    /// Validates the chunked body that starts `data` as far as `data` goes,
    /// without consuming anything; returns the chunk sizes announced in it
    /// (see [`ChunkedDecoder::declared`]). A body that is merely incomplete
    /// is fine; bytes after the end of the body are not looked at.
    pub fn check_prefix(data: &[u8]) -> Result<u64, ChunkError> {
        let mut dec = Self::new();
        let mut rest = data;
        loop {
            let (used, found) = dec.advance(rest)?;
            rest = rest.get(used..).unwrap_or_default();
            match found {
                Some(Chunk::Data(n)) => rest = rest.get(n..).unwrap_or_default(),
                Some(Chunk::End) | None => return Ok(dec.declared),
            }
        }
    }

    /// Steps over framing bytes at the start of `data`. Returns how many
    /// bytes were framing (to be consumed) and what follows them.
    fn advance(&mut self, data: &[u8]) -> Result<(usize, Option<Chunk>), ChunkError> {
        let mut i = 0;
        loop {
            match self.state {
                State::Done => return Ok((i, Some(Chunk::End))),
                State::Data => {
                    let available = data.len() - i;
                    if available == 0 {
                        return Ok((i, None));
                    }
                    let n = self.remaining.min(available as u64) as usize;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok((i, Some(Chunk::Data(n))));
                }
                _ => {}
            }
            let Some(&b) = data.get(i) else {
                return Ok((i, None));
            };
            i += 1;
            self.step(b)?;
        }
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        match self.state {
            State::Size | State::SizeWs | State::Ext => {
                self.line += 1;
                if self.line > MAX_SIZE_LINE {
                    return Err(ChunkError("chunk size line too long"));
                }
            }
            State::TrailerStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::FinalLf => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(ChunkError("trailer section too large"));
                }
            }
            _ => {}
        }
        self.state = match (self.state, b) {
            (State::Size, _) if b.is_ascii_hexdigit() => {
                if self.remaining >> 60 != 0 {
                    return Err(ChunkError("chunk size too large"));
                }
                self.digit_seen = true;
                let d = (b as char).to_digit(16).unwrap_or(0);
                self.remaining = (self.remaining << 4) | u64::from(d);
                State::Size
            }
            (State::Size, _) if !self.digit_seen => return Err(ChunkError("missing chunk size")),
            (State::Size | State::SizeWs, b' ' | b'\t') => State::SizeWs,
            (State::Size | State::SizeWs, b';') => State::Ext,
            (State::Size | State::Ext, b'\r') => State::SizeLf,
            (State::Ext, _) if is_value_byte(b) => State::Ext,
            (State::SizeLf, b'\n') => {
                self.line = 0;
                self.digit_seen = false;
                self.declared = self
                    .declared
                    .checked_add(self.remaining)
                    .ok_or(ChunkError("chunked body too large"))?;
                if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size,
            (State::TrailerStart, b'\r') => State::FinalLf,
            (State::TrailerStart | State::TrailerName, _) if is_tchar(b) => State::TrailerName,
            (State::TrailerName, b':') => State::TrailerValue,
            (State::TrailerValue, b'\r') => State::TrailerLf,
            (State::TrailerValue, _) if is_value_byte(b) => State::TrailerValue,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::FinalLf, b'\n') => State::Done,
            _ => return Err(ChunkError("unexpected byte in chunk framing")),
        };
        Ok(())
    }
}

/// Appends a chunk-size line for a chunk of `len` bytes (`len` > 0).
pub fn encode_chunk_header(len: usize, out: &mut BytesMut) {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends one complete chunk holding `data` (nothing when `data` is empty).
pub fn encode_chunk(data: &[u8], out: &mut BytesMut) {
    if data.is_empty() {
        return;
    }
    encode_chunk_header(data.len(), out);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the body.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf)? {
                    Some(Chunk::Data(n)) => {
                        body.extend_from_slice(&buf[..n]);
                        buf.advance(n);
                    }
                    Some(Chunk::End) => return Ok((body, buf.len())),
                    None => break,
                }
            }
        }
        Err(ChunkError("incomplete"))
    }

    #[test]
    fn decodes_wire_bytes_in_any_split() {
        let wire = b"5\r\nhello\r\n1A;name=val\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, wire.len()] {
            let (body, left) = decode_all(wire, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
            // Bytes after the body (a pipelined message) are left alone.
            if step == wire.len() {
                assert_eq!(left, 4);
            }
        }
        assert_eq!(decode_all(b"0\r\n\r\n", 1).unwrap().0, b"");
        assert_eq!(
            decode_all(b"3 ;x\r\nabc\r\n0\r\n\r\n", 1).unwrap().0,
            b"abc"
        );
    }

    #[test]
    fn rejects_bad_framing() {
        let bad: &[(&str, &[u8])] = &[
            ("non-hex size", b"x\r\n"),
            ("non-hex after digits", b"5g\r\nhello\r\n0\r\n\r\n"),
            ("empty size", b"\r\n"),
            ("negative size", b"-1\r\n"),
            ("plus sign", b"+5\r\nhello\r\n0\r\n\r\n"),
            ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
            ("space inside size", b"1 0\r\n"),
            ("space before size", b" 5\r\nhello\r\n0\r\n\r\n"),
            ("tab before size", b"\t5\r\nhello\r\n0\r\n\r\n"),
            ("space after size", b"5 \r\nhello\r\n0\r\n\r\n"),
            ("overflow", b"10000000000000000\r\n"),
            ("overflow 17 f", b"fffffffffffffffff\r\n"),
            ("bare LF after size", b"5\nhello\r\n0\r\n\r\n"),
            ("bare CR after size", b"5\rhello\r\n0\r\n\r\n"),
            ("data too long", b"5\r\nhelloX\r\n0\r\n\r\n"),
            ("no CRLF after data", b"5\r\nhello0\r\n\r\n"),
            ("bare LF after data", b"5\r\nhello\n0\r\n\r\n"),
            ("bare LF at end", b"5\r\nhello\r\n0\r\n\n"),
            (
                "bare LF in trailer",
                b"5\r\nhello\r\n0\r\nBad\nTrailer\r\n\r\n",
            ),
            ("trailer without colon", b"0\r\nNoColon\r\n\r\n"),
            ("folded trailer", b"0\r\nA: b\r\n c\r\n\r\n"),
            ("NUL in trailer", b"0\r\nA: b\0\r\n\r\n"),
            ("space in trailer name", b"0\r\nA b: c\r\n\r\n"),
            ("control in extension", b"5;a=\x01\r\nhello\r\n0\r\n\r\n"),
            ("LF in extension", b"5;a\nb\r\nhello\r\n0\r\n\r\n"),
        ];
        for (name, wire) in bad {
            assert!(decode_all(wire, 1).is_err(), "{name} (split)");
            assert!(decode_all(wire, wire.len()).is_err(), "{name} (whole)");
            assert!(
                ChunkedDecoder::check_prefix(wire).is_err(),
                "{name} (prefix)"
            );
        }
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        assert!(decode_all(&long, 64).is_err());
    }

    #[test]
    fn accepts_edge_cases_of_the_grammar() {
        // Leading zeros, upper-case hex, BWS before an extension, a quoted
        // extension value, trailer fields.
        let ok: &[(&[u8], &[u8])] = &[
            (b"0005\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"5 ;x\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;x=\"a b\"\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5\r\nhello\r\n0\r\nA: b\r\nC:\td\r\n\r\n", b"hello"),
            (b"00000000000000000000\r\n\r\n", b""),
        ];
        for (wire, body) in ok {
            assert_eq!(
                decode_all(wire, 1).unwrap().0,
                *body,
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        // The largest size that fits in 64 bits is a valid size line.
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nab"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(Some(Chunk::Data(2))));
        assert_eq!(dec.declared(), u64::MAX);
    }

    #[test]
    fn prefix_check_and_declared_sizes() {
        assert_eq!(ChunkedDecoder::check_prefix(b""), Ok(0));
        assert_eq!(ChunkedDecoder::check_prefix(b"5\r\nhel"), Ok(5));
        assert_eq!(ChunkedDecoder::check_prefix(b"5\r\nhello\r\n1"), Ok(5));
        assert_eq!(
            ChunkedDecoder::check_prefix(b"5\r\nhello\r\n100\r\n"),
            Ok(5 + 0x100)
        );
        // Bytes after the end of the body (a pipelined request) are ignored.
        assert_eq!(
            ChunkedDecoder::check_prefix(b"2\r\nhi\r\n0\r\n\r\nGARBAGE\r\n"),
            Ok(2)
        );
        assert!(ChunkedDecoder::check_prefix(b"5\r\nhelloX").is_err());
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n4\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(Some(Chunk::Data(3))));
        buf.advance(3);
        assert_eq!(dec.declared(), 3);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(dec.declared(), 7);
    }

    #[test]
    fn encodes_chunks() {
        let mut out = BytesMut::new();
        encode_chunk(b"hello", &mut out);
        encode_chunk(&[b'z'; 0x1ab], &mut out);
        encode_chunk(b"", &mut out);
        out.extend_from_slice(LAST_CHUNK);
        assert!(out.starts_with(b"5\r\nhello\r\n1ab\r\nzzz"));
        assert!(out.ends_with(b"zz\r\n0\r\n\r\n"));
        let (body, _) = decode_all(&out, 5).unwrap();
        assert_eq!(body.len(), 5 + 0x1ab);
        let mut big = BytesMut::new();
        encode_chunk_header(usize::MAX, &mut big);
        assert_eq!(&big[..], b"ffffffffffffffff\r\n");
    }
}
