//! The chunked decoder: no panic; the body it hands out does not depend on
//! how the input is split into reads; `check_prefix` agrees with it; and a
//! body it accepted, re-encoded by lb's encoder, decodes to the same bytes.
#![no_main]

use bytes::{Buf, BytesMut};
use lb_http::h1::chunked::{Chunk, ChunkedDecoder, LAST_CHUNK, encode_chunk};
use libfuzzer_sys::fuzz_target;

/// Decodes `input` fed `step` bytes at a time: the body bytes, whether the
/// end was seen, and whether it failed.
fn decode(input: &[u8], step: usize) -> (Vec<u8>, bool, bool) {
    let mut dec = ChunkedDecoder::new();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match dec.decode(&mut buf) {
            Err(_) => return (body, false, true),
            Ok(Some(Chunk::End)) => {
                assert!(dec.is_done());
                assert!(body.len() as u64 <= dec.declared());
                return (body, true, false);
            }
            Ok(Some(Chunk::Data(n))) => {
                assert!(n > 0 && n <= buf.len());
                body.extend_from_slice(&buf[..n]);
                buf.advance(n);
                assert!(body.len() as u64 <= dec.declared());
            }
            Ok(None) => {
                assert!(
                    buf.is_empty(),
                    "need more input only once the buffer is used up"
                );
                if fed == input.len() {
                    return (body, false, false);
                }
                let next = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..next]);
                fed = next;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, input.len().max(1));
    let split = decode(input, usize::from(step % 16) + 1);
    assert_eq!(
        whole, split,
        "the result depends on how reads split the input"
    );
    let (body, done, failed) = whole;
    assert_eq!(ChunkedDecoder::check_prefix(input).is_err(), failed);
    if done {
        let mut again = BytesMut::new();
        for piece in body.chunks(7) {
            encode_chunk(piece, &mut again);
        }
        again.extend_from_slice(LAST_CHUNK);
        let (body2, done2, failed2) = decode(&again, again.len());
        assert!(done2 && !failed2);
        assert_eq!(body2, body);
    }
});
