//! Gateway API rule filters as pure functions: header modifiers applied to an
//! HTTP/1.1 field list or an `http::HeaderMap`, `ReplaceFullPath` /
//! `ReplacePrefixMatch` path rewriting, and the `Location` of a
//! `RequestRedirect`. The proxies call these; nothing here does I/O.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::matcher::{PathMatch, prefix_key, prefix_matches};
use super::snapshot::{HeaderModifier, PathModifier, Redirect};

/// One header field as `(name, value)`.
pub type Field<'a> = (&'a [u8], &'a [u8]);

/// Applies `m` to `fields`: `set` replaces every value of a name (in the
/// place of its first occurrence, else at the end), `add` appends a field,
/// `remove` drops every field of a name. Names compare case-insensitively.
pub fn modify_fields<'a>(m: &'a HeaderModifier, fields: &mut Vec<Field<'a>>) {
    for (name, value) in &m.set {
        let name = name.as_bytes();
        match fields
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                fields[first] = (name, value.as_bytes());
                let mut i = 0;
                fields.retain(|(n, _)| {
                    let keep = i <= first || !n.eq_ignore_ascii_case(name);
                    i += 1;
                    keep
                });
            }
            None => fields.push((name, value.as_bytes())),
        }
    }
    for (name, value) in &m.add {
        fields.push((name.as_bytes(), value.as_bytes()));
    }
    for name in &m.remove {
        fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_bytes()));
    }
}

/// Applies `m` to an HTTP/2 header map (same semantics as
/// [`modify_fields`]). Names or values `http` cannot carry are skipped (the
/// control plane validates them).
pub fn modify_map(m: &HeaderModifier, map: &mut HeaderMap) {
    let field = |n: &str, v: &str| {
        Some((
            HeaderName::from_bytes(n.as_bytes()).ok()?,
            HeaderValue::from_str(v).ok()?,
        ))
    };
    for (n, v) in &m.set {
        if let Some((n, v)) = field(n, v) {
            map.insert(n, v);
        }
    }
    for (n, v) in &m.add {
        if let Some((n, v)) = field(n, v) {
            map.append(n, v);
        }
    }
    for n in &m.remove {
        if let Ok(n) = HeaderName::from_bytes(n.as_bytes()) {
            map.remove(n);
        }
    }
}

/// Appends to `out` the path `modifier` makes of `path` (no query string),
/// `matched` being the path match that selected the rule.
///
/// `ReplacePrefixMatch` replaces the matched `PathPrefix` element-wise; a
/// trailing `/` of the prefix or the replacement is ignored, and an empty
/// result becomes `/` (`/foo` replaced by `/` turns `/foo/x` into `/x` and
/// `/foo` into `/`). With any other match kind (which the control plane
/// rejects) the path stays as it is.
pub fn rewrite_path(modifier: &PathModifier, matched: &PathMatch, path: &str, out: &mut String) {
    match modifier {
        PathModifier::ReplaceFullPath(p) => out.push_str(p),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let PathMatch::PathPrefix(prefix) = matched else {
                out.push_str(path);
                return;
            };
            let key = prefix_key(prefix);
            if !prefix_matches(key, path) {
                out.push_str(path);
                return;
            }
            let rest = if key == "/" {
                if path == "/" { "" } else { path }
            } else {
                &path[key.len()..]
            };
            let start = out.len();
            out.push_str(replacement.trim_end_matches('/'));
            out.push_str(rest);
            if out.len() == start {
                out.push('/');
            } else if !out[start..].starts_with('/') {
                out.insert(start, '/');
            }
        }
    }
}

/// The request facts a redirect is computed from.
#[derive(Debug, Clone, Copy)]
pub struct RedirectFrom<'a> {
    /// Whether the request arrived over TLS (scheme `https`).
    pub tls: bool,
    /// The request host, lowercase, without port.
    pub host: &'a str,
    /// The port of the Gateway Listener the request arrived on.
    pub listener_port: u16,
    /// The request path, without query.
    pub path: &'a str,
    /// The query string without `?` (empty when none).
    pub query: &'a str,
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The `Location` of a `RequestRedirect`: scheme from the filter or the
/// request; hostname from the filter or the request; port from the filter,
/// else the filter scheme's well-known port, else the Listener port, and
/// left out when it is the scheme's well-known port; path unchanged or
/// modified as in [`rewrite_path`]; the query string kept. Control bytes
/// and spaces are percent-encoded, so the `Location` stays one field.
pub fn redirect_location(r: &Redirect, matched: &PathMatch, from: &RedirectFrom<'_>) -> String {
    let request_scheme = if from.tls { "https" } else { "http" };
    let scheme = r.scheme.as_deref().unwrap_or(request_scheme);
    let port = r.port.unwrap_or_else(|| {
        r.scheme
            .as_deref()
            .and_then(well_known_port)
            .unwrap_or(from.listener_port)
    });
    let host = r.hostname.as_deref().unwrap_or(from.host);
    let mut out =
        String::with_capacity(scheme.len() + host.len() + from.path.len() + from.query.len() + 16);
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(host);
    if well_known_port(scheme) != Some(port) {
        out.push(':');
        out.push_str(&port.to_string());
    }
    match &r.path {
        Some(m) => rewrite_path(m, matched, from.path, &mut out),
        None => out.push_str(from.path),
    }
    if !from.query.is_empty() {
        out.push('?');
        out.push_str(from.query);
    }
    // Defence in depth: the control plane refuses host names and paths
    // with such bytes; if one got here, it is escaped, never written raw.
    match crate::h1::rewrite::escape_ctl(out.as_bytes()) {
        std::borrow::Cow::Borrowed(_) => out,
        std::borrow::Cow::Owned(v) => String::from_utf8_lossy(&v).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str, replacement: &str, path: &str) -> String {
        let mut out = String::new();
        rewrite_path(
            &PathModifier::ReplacePrefixMatch(replacement.into()),
            &PathMatch::PathPrefix(p.into()),
            path,
            &mut out,
        );
        out
    }

    fn full(replacement: &str, path: &str) -> String {
        let mut out = String::new();
        rewrite_path(
            &PathModifier::ReplaceFullPath(replacement.into()),
            &PathMatch::PathPrefix("/".into()),
            path,
            &mut out,
        );
        out
    }

    fn modifier(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderModifier {
        let pairs = |l: &[(&str, &str)]| {
            l.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        HeaderModifier {
            set: pairs(set),
            add: pairs(add),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn text(fields: &[Field<'_>]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    fn s(n: &str, v: &str) -> (String, String) {
        (n.into(), v.into())
    }

    #[test]
    fn header_modifier_on_fields() {
        let m = modifier(
            &[("x-header-set", "set-overwrites-values")],
            &[
                ("x-header-add", "header-val-1"),
                ("x-header-add-append", "header-val-2"),
            ],
            &["x-header-remove"],
        );
        let mut fields: Vec<Field<'_>> = vec![
            (b"Host", b"a"),
            (b"X-Header-Set", b"set-val"),
            (b"X-Header-Remove", b"remove-val"),
            (b"X-Header-Add-Append", b"append-val-1"),
            (b"x-header-set", b"second"),
            (b"X-HEADER-REMOVE", b"again"),
        ];
        modify_fields(&m, &mut fields);
        assert_eq!(
            text(&fields),
            vec![
                s("Host", "a"),
                s("x-header-set", "set-overwrites-values"),
                s("X-Header-Add-Append", "append-val-1"),
                s("x-header-add", "header-val-1"),
                s("x-header-add-append", "header-val-2"),
            ]
        );
        // Set of an absent header adds it; remove of an absent one is a no-op.
        let m = modifier(&[("x-new", "1")], &[], &["x-absent"]);
        let mut fields: Vec<Field<'_>> = vec![(b"a", b"b")];
        modify_fields(&m, &mut fields);
        assert_eq!(text(&fields), vec![s("a", "b"), s("x-new", "1")]);
    }

    #[test]
    fn rule_then_backend_modifiers_compose() {
        let rule = modifier(&[], &[("x-a", "rule")], &[]);
        let backend = modifier(&[("X-A", "backend")], &[], &[]);
        let mut fields: Vec<Field<'_>> = vec![(b"x-a", b"client")];
        modify_fields(&rule, &mut fields);
        modify_fields(&backend, &mut fields);
        assert_eq!(text(&fields), vec![s("X-A", "backend")]);
    }

    #[test]
    fn header_modifier_on_map() {
        let m = modifier(&[("x-set", "new")], &[("x-add", "2")], &["X-Remove"]);
        let mut map = HeaderMap::new();
        map.append("x-set", HeaderValue::from_static("old1"));
        map.append("x-set", HeaderValue::from_static("old2"));
        map.append("x-add", HeaderValue::from_static("1"));
        map.append("x-remove", HeaderValue::from_static("gone"));
        modify_map(&m, &mut map);
        let all =
            |n: &str| -> Vec<&str> { map.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
        assert_eq!(all("x-set"), ["new"]);
        assert_eq!(all("x-add"), ["1", "2"]);
        assert!(all("x-remove").is_empty());
    }

    /// The `ReplacePrefixMatch` table of the HTTPRoute API documentation.
    #[test]
    fn replace_prefix_match_table() {
        let cases = [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
        ];
        for (path, p, r, want) in cases {
            assert_eq!(prefix(p, r, path), want, "{path} with {p} -> {r:?}");
        }
    }

    #[test]
    fn replace_prefix_match_edges() {
        assert_eq!(prefix("/", "/api", "/x/y"), "/api/x/y");
        assert_eq!(prefix("/", "/api", "/"), "/api");
        assert_eq!(prefix("/", "/", "/x"), "/x");
        assert_eq!(prefix("/foo", "/bar", "/foobar"), "/foobar");
        assert_eq!(prefix("/foo", "bar", "/foo/x"), "/bar/x");
        let mut out = String::new();
        rewrite_path(
            &PathModifier::ReplacePrefixMatch("/x".into()),
            &PathMatch::Exact("/a".into()),
            "/a",
            &mut out,
        );
        assert_eq!(out, "/a");
    }

    /// Conformance: httproute-rewrite-path.
    #[test]
    fn conformance_rewrite_path() {
        assert_eq!(prefix("/prefix/one", "/one", "/prefix/one/two"), "/one/two");
        assert_eq!(
            prefix("/strip-prefix", "/", "/strip-prefix/three"),
            "/three"
        );
        assert_eq!(prefix("/strip-prefix", "/", "/strip-prefix"), "/");
        assert_eq!(full("/one", "/full/one/two"), "/one");
        assert_eq!(
            full("/test", "/full/rewrite-path-and-modify-headers/test"),
            "/test"
        );
        assert_eq!(
            prefix(
                "/prefix/rewrite-path-and-modify-headers",
                "/prefix",
                "/prefix/rewrite-path-and-modify-headers/one"
            ),
            "/prefix/one"
        );
    }

    fn redirect(
        scheme: Option<&str>,
        hostname: Option<&str>,
        port: Option<u16>,
        path: Option<PathModifier>,
    ) -> Redirect {
        Redirect {
            scheme: scheme.map(Into::into),
            hostname: hostname.map(Into::into),
            port,
            path,
            status: 302,
        }
    }

    fn from<'a>(tls: bool, port: u16, path: &'a str, query: &'a str) -> RedirectFrom<'a> {
        RedirectFrom {
            tls,
            host: "example.com",
            listener_port: port,
            path,
            query,
        }
    }

    /// Conformance: httproute-redirect-path.
    #[test]
    fn conformance_redirect_path() {
        let m = |p: &str| PathMatch::PathPrefix(p.into());
        let pre = |r: &str| Some(PathModifier::ReplacePrefixMatch(r.into()));
        let fp = |r: &str| Some(PathModifier::ReplaceFullPath(r.into()));
        let cases = [
            (
                redirect(None, None, None, pre("/replacement-prefix")),
                "/original-prefix",
                "/original-prefix/lemon",
                "http://example.com/replacement-prefix/lemon",
            ),
            (
                redirect(None, None, None, fp("/full-path-replacement")),
                "/full",
                "/full/path/original",
                "http://example.com/full-path-replacement",
            ),
            (
                redirect(None, Some("example.org"), None, pre("/replacement-prefix")),
                "/path-and-host",
                "/path-and-host",
                "http://example.org/replacement-prefix",
            ),
            (
                redirect(None, None, None, pre("/replacement-prefix")),
                "/path-and-status",
                "/path-and-status",
                "http://example.com/replacement-prefix",
            ),
            (
                redirect(None, Some("example.org"), None, fp("/replacement-full")),
                "/full-path-and-host",
                "/full-path-and-host",
                "http://example.org/replacement-full",
            ),
            (
                redirect(None, None, None, fp("/replacement-full")),
                "/full-path-and-status",
                "/full-path-and-status",
                "http://example.com/replacement-full",
            ),
        ];
        for (r, matched, path, want) in cases {
            let got = redirect_location(&r, &m(matched), &from(false, 80, path, ""));
            assert_eq!(got, want, "{path}");
        }
    }

    #[test]
    fn redirect_location_never_carries_cr_lf() {
        let any = PathMatch::PathPrefix("/".into());
        let r = redirect(
            None,
            Some("evil.test\r\nSet-Cookie: a=b"),
            None,
            Some(PathModifier::ReplaceFullPath("/x\r\nX: y".into())),
        );
        let loc = redirect_location(&r, &any, &from(false, 80, "/a", ""));
        assert_eq!(loc, "http://evil.test%0D%0ASet-Cookie:%20a=b/x%0D%0AX:%20y");
    }

    #[test]
    fn redirect_port_and_scheme_rules() {
        let any = PathMatch::PathPrefix("/".into());
        let loc = |r: &Redirect, f: RedirectFrom<'_>| redirect_location(r, &any, &f);
        // Scheme https, no port: the well-known port, left out.
        let r = redirect(Some("https"), None, None, None);
        assert_eq!(
            loc(&r, from(false, 8080, "/a", "")),
            "https://example.com/a"
        );
        // No scheme change, listener port 8080: kept.
        let r = redirect(None, None, None, None);
        assert_eq!(
            loc(&r, from(false, 8080, "/a", "q=1")),
            "http://example.com:8080/a?q=1"
        );
        assert_eq!(loc(&r, from(false, 80, "/a", "")), "http://example.com/a");
        assert_eq!(loc(&r, from(true, 443, "/", "")), "https://example.com/");
        assert_eq!(
            loc(&r, from(true, 8443, "/", "")),
            "https://example.com:8443/"
        );
        // Explicit port 443 with https: left out; other ports kept.
        let r = redirect(Some("https"), None, Some(443), None);
        assert_eq!(loc(&r, from(false, 80, "/x", "")), "https://example.com/x");
        let r = redirect(Some("http"), None, Some(8080), None);
        assert_eq!(
            loc(&r, from(true, 443, "/x", "")),
            "http://example.com:8080/x"
        );
        let r = redirect(None, Some("other.example"), Some(80), None);
        assert_eq!(loc(&r, from(false, 8080, "/", "")), "http://other.example/");
        // Scheme http from an https listener: port 80, omitted.
        let r = redirect(Some("http"), None, None, None);
        assert_eq!(loc(&r, from(true, 443, "/x", "")), "http://example.com/x");
    }
}
