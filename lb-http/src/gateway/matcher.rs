//! One compiled `HTTPRouteMatch` (path, method, headers, query parameters)
//! and how it is evaluated against a request. All fields of one match are
//! ANDed (HTTPRouteMatch); ORing the matches of a rule is the table's job.
//!
//! Regular expressions (path, header and query values) use the `regex` crate
//! dialect, are compiled once when the match is built, and must match the
//! whole value: the pattern is wrapped as `\A(?:pattern)\z`. The spec leaves
//! the dialect implementation-specific ("RegularExpression" has
//! implementation-specific conformance); full-match is what users of
//! Envoy-style gateways expect, and `.*` restores substring search.

use std::borrow::Cow;

use http::Method;
use regex::bytes::{Regex, RegexBuilder};
use serde::{Serialize, Serializer};

use super::request::{HeaderSource, query_value};

/// Largest compiled size allowed for one pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled, anchored regular expression that serializes as its source.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: Box<str>,
    re: Regex,
}

impl Pattern {
    /// Compiles `source` for full-value matching.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let re = RegexBuilder::new(&format!(r"\A(?:{source})\z"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()?;
        Ok(Pattern {
            source: source.into(),
            re,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &[u8]) -> bool {
        self.re.is_match(value)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// `HTTPPathMatch`: how the request path (without query) is compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum PathMatch {
    /// `Exact`: the path equals the value, case-sensitive.
    Exact(String),
    /// `PathPrefix`: the value is a prefix of the path element by element
    /// (split on `/`); a trailing `/` in the value is ignored, so `/foo` and
    /// `/foo/` both match `/foo`, `/foo/` and `/foo/bar` but not `/foobar`.
    PathPrefix(String),
    /// `RegularExpression`: the whole path matches the pattern.
    RegularExpression(Pattern),
}

impl PathMatch {
    /// A `RegularExpression` path match, compiled now.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Pattern::new(pattern).map(PathMatch::RegularExpression)
    }

    /// Whether `path` (no query string) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(v) => v == path,
            PathMatch::PathPrefix(v) => prefix_matches(prefix_key(v), path),
            PathMatch::RegularExpression(p) => p.is_match(path.as_bytes()),
        }
    }
}

impl Default for PathMatch {
    /// `PathPrefix /`, the spec's default for a match without `path`.
    fn default() -> Self {
        PathMatch::PathPrefix("/".to_owned())
    }
}

/// A prefix value with trailing `/` removed; `/` (or empty) stays `/`.
pub(crate) fn prefix_key(value: &str) -> &str {
    let t = value.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

/// Element-wise prefix test against a [`prefix_key`].
pub(crate) fn prefix_matches(key: &str, path: &str) -> bool {
    key == "/"
        || (path.starts_with(key)
            && (path.len() == key.len() || path.as_bytes()[key.len()] == b'/'))
}

/// How a header or query value is compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum ValueMatch {
    /// `Exact`: byte-for-byte equal (case-sensitive).
    Exact(String),
    /// `RegularExpression`: the whole value matches.
    RegularExpression(Pattern),
}

impl ValueMatch {
    /// A `RegularExpression` value match, compiled now.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Pattern::new(pattern).map(ValueMatch::RegularExpression)
    }

    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(v) => v.as_bytes() == value,
            ValueMatch::RegularExpression(p) => p.is_match(value),
        }
    }
}

/// `HTTPHeaderMatch`: the named header's value must match.
///
/// Names compare case-insensitively (stored lowercase). A header repeated in
/// the request is matched as its values joined with `,` in order, the
/// combination RFC 9110 §5.3 (RFC 7230 §3.2.2) defines, which the spec
/// recommends proxies follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderMatch {
    /// Header name, lowercase.
    pub name: String,
    /// Value comparison.
    pub value: ValueMatch,
}

impl HeaderMatch {
    /// A header match; the name is folded to lowercase.
    pub fn new(name: &str, value: ValueMatch) -> Self {
        HeaderMatch {
            name: name.to_ascii_lowercase(),
            value,
        }
    }

    fn matches<H: HeaderSource + ?Sized>(&self, headers: &H) -> bool {
        let mut values = headers.values(&self.name);
        let Some(first) = values.next() else {
            return false;
        };
        let Some(second) = values.next() else {
            return self.value.matches(first);
        };
        let mut joined = Vec::with_capacity(first.len() + second.len() + 1);
        joined.extend_from_slice(first);
        for v in std::iter::once(second).chain(values) {
            joined.push(b',');
            joined.extend_from_slice(v);
        }
        self.value.matches(&joined)
    }
}

/// `HTTPQueryParamMatch`: the named query parameter's value must match.
///
/// Names compare exactly (case-sensitive). Names and values are compared
/// after percent-decoding (RFC 3986 §2.1; `+` is not a space, invalid
/// escapes stay literal), so `?q=a%20b` matches the value `a b`: the spec
/// does not say, and the decoded form is what a user writes in YAML. A
/// parameter repeated in the request is matched on its first occurrence, as
/// the spec recommends. A parameter without `=` has the empty value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryMatch {
    /// Parameter name (decoded form).
    pub name: String,
    /// Value comparison.
    pub value: ValueMatch,
}

impl QueryMatch {
    fn matches(&self, query: &str) -> bool {
        query_value(query, &self.name).is_some_and(|v: Cow<'_, [u8]>| self.value.matches(&v))
    }
}

/// One compiled `HTTPRouteMatch`; all its conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteMatch {
    path: PathMatch,
    #[serde(serialize_with = "ser_method")]
    method: Option<Method>,
    headers: Vec<HeaderMatch>,
    query: Vec<QueryMatch>,
}

fn ser_method<S: Serializer>(m: &Option<Method>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_some(m.as_str()),
        None => s.serialize_none(),
    }
}

impl Default for RouteMatch {
    /// Matches every request: `PathPrefix /`, the spec's meaning of a rule
    /// without `matches` (HTTPRouteRule.matches default).
    fn default() -> Self {
        RouteMatch::new(PathMatch::default(), None, Vec::new(), Vec::new())
    }
}

impl RouteMatch {
    /// Builds a match. Per the spec, when several header (or query) entries
    /// share a name (case-insensitive for headers, exact for query), only the
    /// first is kept: "Subsequent entries with an equivalent ... name MUST be
    /// ignored". Precedence counts the entries kept.
    pub fn new(
        path: PathMatch,
        method: Option<Method>,
        mut headers: Vec<HeaderMatch>,
        mut query: Vec<QueryMatch>,
    ) -> Self {
        for h in &mut headers {
            h.name.make_ascii_lowercase();
        }
        let mut seen: Vec<String> = Vec::new();
        headers.retain(|h| {
            let fresh = !seen.contains(&h.name);
            seen.push(h.name.clone());
            fresh
        });
        seen.clear();
        query.retain(|q| {
            let fresh = !seen.contains(&q.name);
            seen.push(q.name.clone());
            fresh
        });
        RouteMatch {
            path,
            method,
            headers,
            query,
        }
    }

    /// The path condition.
    pub fn path(&self) -> &PathMatch {
        &self.path
    }

    /// The method condition, if any.
    pub fn method(&self) -> Option<&Method> {
        self.method.as_ref()
    }

    /// The header conditions (names unique, lowercase).
    pub fn headers(&self) -> &[HeaderMatch] {
        &self.headers
    }

    /// The query parameter conditions (names unique).
    pub fn query(&self) -> &[QueryMatch] {
        &self.query
    }

    /// Everything but the path: method, headers, query parameters.
    pub(crate) fn matches_rest<H: HeaderSource + ?Sized>(
        &self,
        method: &[u8],
        headers: &H,
        query: &str,
    ) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| m.as_str().as_bytes() == method)
            && self.headers.iter().all(|h| h.matches(headers))
            && self.query.iter().all(|q| q.matches(query))
    }

    /// Whether the request matches every condition.
    pub fn matches<H: HeaderSource + ?Sized>(
        &self,
        path: &str,
        method: &[u8],
        headers: &H,
        query: &str,
    ) -> bool {
        self.path.matches(path) && self.matches_rest(method, headers, query)
    }
}
