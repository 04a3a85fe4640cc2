//! The chunked transfer coding: an incremental, sans-I/O decoder that
//! validates chunk framing byte by byte and hands out data spans, and the
//! encoder helpers used to re-emit chunks. Chunk extensions are dropped;
//! trailer fields are validated for size and dropped (not forwarded).

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
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// Incremental chunked-body decoder.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    remaining: u64,
    digits: u8,
    line: usize,
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Size,
            remaining: 0,
            digits: 0,
            line: 0,
            trailers: 0,
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing bytes from `buf` until body data or the end is found.
    /// `Ok(None)` means `buf` was used up and more input is needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, ChunkError> {
        let mut i = 0;
        let result = loop {
            if self.state == State::Data {
                buf.advance(i);
                i = 0;
                if buf.is_empty() {
                    break None;
                }
                let n = self.remaining.min(buf.len() as u64) as usize;
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Some(Chunk::Data(n)));
            }
            if self.state == State::Done {
                break Some(Chunk::End);
            }
            let Some(&b) = buf.get(i) else {
                break None;
            };
            i += 1;
            self.step(b)?;
            if self.state == State::Done {
                break Some(Chunk::End);
            }
        };
        buf.advance(i);
        Ok(result)
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        match self.state {
            State::Size | State::SizeWs | State::Ext => {
                self.line += 1;
                if self.line > MAX_SIZE_LINE {
                    return Err(ChunkError("chunk size line too long"));
                }
            }
            State::TrailerStart | State::TrailerLine | State::TrailerLf | State::FinalLf => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(ChunkError("trailer section too large"));
                }
            }
            _ => {}
        }
        self.state = match (self.state, b) {
            (State::Size, _) if b.is_ascii_hexdigit() => {
                if self.digits >= 16 {
                    return Err(ChunkError("chunk size too large"));
                }
                self.digits += 1;
                let d = (b as char).to_digit(16).unwrap_or(0);
                self.remaining = (self.remaining << 4) | u64::from(d);
                State::Size
            }
            (State::Size, _) if self.digits == 0 => return Err(ChunkError("missing chunk size")),
            (State::Size | State::SizeWs, b' ' | b'\t') => State::SizeWs,
            (State::Size | State::SizeWs, b';') => State::Ext,
            (State::Size | State::SizeWs | State::Ext, b'\r') => State::SizeLf,
            (State::Ext, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => State::Ext,
            (State::SizeLf, b'\n') => {
                self.line = 0;
                self.digits = 0;
                if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size,
            (State::TrailerStart, b'\r') => State::FinalLf,
            (State::TrailerStart | State::TrailerLine, _) if b != b'\r' && b != b'\n' => {
                State::TrailerLine
            }
            (State::TrailerLine, b'\r') => State::TrailerLf,
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
        let bad: &[&[u8]] = &[
            b"x\r\n",
            b"\r\n",
            b"-1\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"11111111111111111\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nBad\nTrailer\r\n\r\n",
        ];
        for wire in bad {
            assert!(
                decode_all(wire, 1).is_err(),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        assert!(decode_all(&long, 64).is_err());
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
