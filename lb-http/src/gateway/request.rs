//! The request side of matching: header access, request-target splitting,
//! query parameter lookup with percent-decoding, and the host key.

use std::borrow::Cow;

/// Read access to a request's headers for header matches.
pub trait HeaderSource {
    /// Every value of the header called `name` (given lowercase; compare
    /// case-insensitively), in request order.
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's;
}

impl HeaderSource for [(&str, &[u8])] {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl HeaderSource for [httparse::Header<'_>] {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

impl HeaderSource for http::HeaderMap {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.get_all(name).iter().map(|v| v.as_bytes())
    }
}

/// Splits a request-target into path and query (`/a?b=1#f` gives `/a`,
/// `b=1`); a fragment, which clients should not send, is dropped.
pub fn split_target(target: &str) -> (&str, &str) {
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    target.split_once('?').unwrap_or((target, ""))
}

/// The host as the table keys it: port removed (the spec: "Implementations
/// MUST ignore any port value specified in the HTTP Host header"), one
/// trailing dot removed, ASCII lowercase. Borrows unless it must fold case.
pub fn host_key(raw: &str) -> Cow<'_, str> {
    let host = if raw.starts_with('[') {
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The decoded value of the first query parameter whose decoded name is
/// `name`; `None` when absent.
pub(crate) fn query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, [u8]>> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (!pair.is_empty() && *pct_decode(n) == *name.as_bytes()).then(|| pct_decode(v))
    })
}

/// RFC 3986 percent-decoding; invalid escapes stay as written. Borrows when
/// there is nothing to decode.
pub(crate) fn pct_decode(s: &str) -> Cow<'_, [u8]> {
    let b = s.as_bytes();
    if !b.contains(&b'%') {
        return Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}
