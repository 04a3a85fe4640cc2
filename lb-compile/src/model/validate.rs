//! Checks for manifest values that end up on the wire: header names and
//! values, host names, paths, redirect schemes, ports and status codes, and
//! regular expressions. Pure functions, no I/O; the model validators
//! (`validate_http_route`, `validate_grpc_route`) call them where wire types
//! become domain types, so a value that fails here never reaches a head.
//!
//! Each check returns a message naming the value, for the caller to place at
//! its field path.

/// Longest regular expression source accepted (bytes). Compilation is
/// further bounded by the matcher's compiled-size limit.
pub const MAX_REGEX_LEN: usize = 1024;

/// Longest header value accepted (bytes), as the Gateway API CRDs bound it.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;

/// Longest path accepted (bytes), as the Gateway API CRDs bound it.
pub const MAX_PATH_LEN: usize = 1024;

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header field name: an RFC 9110 token (1 to 256 `tchar`s).
pub fn header_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 {
        return Err(format!("header name {name:?} must be 1 to 256 characters"));
    }
    match name.bytes().find(|b| !is_tchar(*b)) {
        None => Ok(()),
        Some(b) => Err(format!(
            "header name {name:?} is not an RFC 9110 token (byte 0x{b:02x})"
        )),
    }
}

/// A header field value: no control character but HTAB (so no CR, LF or
/// NUL), at most [`MAX_HEADER_VALUE_LEN`] bytes. Non-ASCII UTF-8 is
/// allowed (`obs-text`).
pub fn header_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_HEADER_VALUE_LEN {
        return Err(format!(
            "header value is longer than {MAX_HEADER_VALUE_LEN} bytes"
        ));
    }
    match value.bytes().find(|b| is_ctl(*b) && *b != b'\t') {
        None => Ok(()),
        Some(b) => Err(format!(
            "header value {value:?} contains control character 0x{b:02x} (CR, LF, NUL and other controls but tab are refused)"
        )),
    }
}

fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// A host name: an RFC 1123 DNS name of letters, digits and hyphens (any
/// case: the compiler lower-cases it), labels of 1 to 63 characters, at most
/// 253 in all. `*.` as the whole first label only when `wildcard`.
pub fn hostname(host: &str, wildcard: bool) -> Result<(), String> {
    let rest = match host.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => host,
    };
    if host.is_empty() || host.len() > 253 {
        return Err(format!("host name {host:?} must be 1 to 253 characters"));
    }
    for label in rest.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{host:?} is not an RFC 1123 host name (label {label:?}){}",
                if wildcard {
                    ""
                } else {
                    "; no wildcard is allowed here"
                }
            ));
        }
    }
    Ok(())
}

/// A path written into a request target or `Location`: absolute (`/...`),
/// printable ASCII only (no space, CR, LF, NUL or other control, no
/// non-ASCII byte: percent-encode those), no `#`, at most [`MAX_PATH_LEN`]
/// bytes.
pub fn path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("path {p:?} must start with \"/\""));
    }
    if p.len() > MAX_PATH_LEN {
        return Err(format!("path is longer than {MAX_PATH_LEN} bytes"));
    }
    match p.bytes().find(|b| !b.is_ascii_graphic() || *b == b'#') {
        None => Ok(()),
        Some(b) => Err(format!(
            "path {p:?} contains byte 0x{b:02x} (only printable ASCII without space or '#'; percent-encode the rest)"
        )),
    }
}

/// A redirect scheme: `http` or `https`.
pub fn redirect_scheme(s: &str) -> Result<(), String> {
    match s {
        "http" | "https" => Ok(()),
        _ => Err(format!("scheme {s:?} is not http or https")),
    }
}

/// A port: 1 to 65535.
pub fn port(p: i64) -> Result<u16, String> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {p} is not in 1-65535"))
}

/// A redirect status code lb answers with: 301 and 302 (the Gateway API's
/// core set), 303, 307 and 308.
pub fn redirect_status(s: i64) -> Result<u16, String> {
    match s {
        301 | 302 | 303 | 307 | 308 => Ok(s as u16),
        _ => Err(format!(
            "redirect statusCode {s} is not one of 301, 302, 303, 307, 308"
        )),
    }
}

/// A regular expression: at most [`MAX_REGEX_LEN`] bytes and compiles
/// within the matcher's compiled-size limit (the same builder the data
/// plane uses).
pub fn regex(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!(
            "regular expression is longer than {MAX_REGEX_LEN} bytes"
        ));
    }
    lb_http::gateway::ValueMatch::regex(pattern)
        .map(drop)
        .map_err(|e| format!("invalid regular expression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_tokens() {
        for ok in ["X-Header", "a", "x_y.z~!#$%&'*+-^`|", &"a".repeat(256)] {
            assert_eq!(header_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "X Header",
            "X:Header",
            "X\r\nInjected",
            "x\0",
            "é",
            "(x)",
            &"a".repeat(257),
        ] {
            assert!(header_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn header_values_refuse_controls_but_tab() {
        for ok in ["", "v", "a\tb", "ünïcode", "with space", &"v".repeat(4096)] {
            assert_eq!(header_value(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "v\r\nX-Injected: yes",
            "v\n",
            "v\r",
            "v\0",
            "\x01",
            "\x1b[1m",
            "del\x7f",
            &"v".repeat(4097),
        ] {
            let e = header_value(bad).unwrap_err();
            assert!(e.contains("control") || e.contains("longer"), "{e}");
        }
    }

    #[test]
    fn hostnames_are_rfc_1123() {
        for ok in ["a.test", "A.Example.COM", "x-1.y", "localhost", "1.2.3.4"] {
            assert_eq!(hostname(ok, false), Ok(()), "{ok}");
        }
        assert_eq!(hostname("*.a.test", true), Ok(()));
        for bad in [
            "",
            "*.a.test",
            "a..test",
            "-a.test",
            "a-.test",
            "a_b.test",
            "a.test\r\nX: y",
            "a test",
            "a.test:80",
            &format!("{}.test", "a".repeat(64)),
            &"a.".repeat(127),
        ] {
            assert!(hostname(bad, false).is_err(), "{bad:?}");
        }
        assert!(hostname("a.*.test", true).is_err());
        assert!(hostname("*", true).is_err());
    }

    #[test]
    fn paths_are_absolute_and_printable() {
        for ok in ["/", "/a/b?c=d", "/%20x", "/~user/a-b_c.d"] {
            assert_eq!(path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "/a b",
            "/a\r\nX: y",
            "/a\0",
            "/\t",
            "/é",
            "/a#frag",
            &format!("/{}", "a".repeat(1024)),
        ] {
            assert!(path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn redirect_sets() {
        assert!(redirect_scheme("http").is_ok() && redirect_scheme("https").is_ok());
        for bad in ["HTTP", "ftp", "javascript", ""] {
            assert!(redirect_scheme(bad).is_err(), "{bad}");
        }
        assert_eq!(port(1), Ok(1));
        assert_eq!(port(65535), Ok(65535));
        for bad in [0, -1, 65536] {
            assert!(port(bad).is_err(), "{bad}");
        }
        for s in [301, 302, 303, 307, 308] {
            assert_eq!(redirect_status(s), Ok(s as u16));
        }
        for bad in [200, 300, 304, 404, 500] {
            assert!(redirect_status(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regexes_are_bounded() {
        assert_eq!(regex("/api/v[0-9]+"), Ok(()));
        assert!(regex("(").unwrap_err().contains("invalid"));
        assert!(regex(&"a".repeat(1025)).unwrap_err().contains("longer"));
        // Short source, huge compiled program: refused by the size limit.
        assert!(regex(r"\w{1000}\w{1000}").is_err());
    }
}
