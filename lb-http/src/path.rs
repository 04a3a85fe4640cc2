//! Path normalisation for routing: lb routes on, and forwards, the same
//! normalised path, so a route cannot be used to reach a path the backend
//! would resolve elsewhere (`/public/../internal`, `/public/%2e%2e/internal`).
//!
//! On the path part of an origin-form target (the query is kept as sent):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded, other escapes keep their encoding with upper-case hex
//!   (RFC 3986 section 6.2.2);
//! - dot-segments are removed (RFC 3986 section 5.2.4), `..` above the root
//!   stays at the root;
//! - runs of `/` are merged into one (as most web servers do);
//! - an encoded `/` or `\` (`%2F`, `%5C`), a raw `\`, or a malformed escape
//!   makes the request invalid (400): lb and a backend could split such a
//!   path differently.
//!
//! Pure functions, no I/O.

use std::borrow::Cow;

/// Why a path cannot be normalised (the request gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: a separator hidden from routing.
    EncodedSeparator,
    /// A raw `\`, which some servers take for `/`.
    Backslash,
}

impl PathError {
    /// A short description for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::BadEscape => "malformed percent-encoding in path",
            PathError::EncodedSeparator => "encoded / or \\ in path",
            PathError::Backslash => "backslash in path",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `path` may need any work (fast check for the common case).
fn needs_work(path: &[u8]) -> bool {
    path.iter().any(|b| matches!(b, b'%' | b'\\'))
        || path.windows(2).any(|w| w == b"//" || w == b"/.")
}

/// Normalises the path of `target` (origin-form, `/...`, query kept); any
/// other target (`*`) is returned as it is. Borrowed when nothing changes.
pub fn normalize_target(target: &str) -> Result<Cow<'_, str>, PathError> {
    if !target.starts_with('/') {
        return Ok(Cow::Borrowed(target));
    }
    let (path, query) = match target.find('?') {
        Some(i) => (&target[..i], &target[i..]),
        None => (target, ""),
    };
    if !needs_work(path.as_bytes()) {
        return Ok(Cow::Borrowed(target));
    }
    let decoded = decode(path.as_bytes())?;
    let mut out = remove_dots(&decoded);
    out.push_str(query);
    Ok(if out == target {
        Cow::Borrowed(target)
    } else {
        Cow::Owned(out)
    })
}

/// Decodes unreserved escapes, upper-cases the others.
fn decode(path: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let (Some(h), Some(l)) = (
                    path.get(i + 1).copied().and_then(hex),
                    path.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let b = h << 4 | l;
                if b == b'/' || b == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                if unreserved(b) {
                    out.push(b);
                } else {
                    out.push(b'%');
                    out.extend_from_slice(format!("{b:02X}").as_bytes());
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Removes dot-segments and merges slashes of an absolute path.
fn remove_dots(path: &[u8]) -> String {
    let mut segments: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = path.split(|b| *b == b'/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            b"" | b"." => trailing = i == last,
            b".." => {
                segments.pop();
                trailing = i == last;
            }
            s => {
                segments.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        // Only ASCII escapes were decoded; the rest is the target's bytes,
        // which the head parser admitted as visible ASCII.
        out.push_str(&String::from_utf8_lossy(s));
    }
    if segments.is_empty() || trailing {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(t: &str) -> Result<String, PathError> {
        normalize_target(t).map(Cow::into_owned)
    }

    #[test]
    fn plain_paths_are_borrowed() {
        for t in ["/", "/a/b", "/a/b/", "/a.b/c..d/.e", "/a?x=/../y", "*"] {
            assert!(matches!(normalize_target(t), Ok(Cow::Borrowed(_))), "{t}");
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        let cases = [
            ("/public/../internal", "/internal"),
            ("/public/./x", "/public/x"),
            ("/a/b/../../c", "/c"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/./", "/a/"),
            ("/a/b/../c?q=/../x", "/a/c?q=/../x"),
        ];
        for (t, want) in cases {
            assert_eq!(norm(t).as_deref(), Ok(want), "{t}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_before_dot_removal() {
        let cases = [
            ("/public/%2e%2e/internal", "/internal"),
            ("/public/%2E%2e/internal", "/internal"),
            ("/public/.%2e/internal", "/internal"),
            ("/%7Euser/%41", "/~user/A"),
            ("/a%20b/%c3%a9", "/a%20b/%C3%A9"),
            ("/a%3fb", "/a%3Fb"),
        ];
        for (t, want) in cases {
            assert_eq!(norm(t).as_deref(), Ok(want), "{t}");
        }
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(norm("//internal").as_deref(), Ok("/internal"));
        assert_eq!(norm("/a//b///c/").as_deref(), Ok("/a/b/c/"));
        assert_eq!(norm("/public//..//internal").as_deref(), Ok("/internal"));
    }

    #[test]
    fn hidden_separators_and_bad_escapes_are_refused() {
        for (t, e) in [
            ("/public%2f..%2finternal", PathError::EncodedSeparator),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a\\..\\b", PathError::Backslash),
            ("/a%", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
        ] {
            assert_eq!(norm(t), Err(e), "{t}");
        }
    }
}
