//! One HTTPRoute or GRPCRoute rule's action: filters (rule level and per
//! backendRef), weighted backends, timeouts.
//!
//! Unsupported filters follow the spec (`HTTPRouteFilter.type`): a filter
//! is never skipped, so the rule's requests get a 500 (`fixed_status`).
//! An `ExtensionRef` names a kind lb does not know, an unresolvable
//! reference: `ResolvedRefs=False`, reason `InvalidKind`. Any other type lb
//! does not implement (CORS, ExternalAuth, unknown values) is an
//! unsupported value: the route reports it (`Accepted=False` reason
//! `UnsupportedValue` when no rule is left, else `PartiallyInvalid=True`;
//! see the route compilers). Malformed values (bad status code, path
//! modifier, duration) make the whole route `Accepted=False`
//! `UnsupportedValue` with no entries; `URLRewrite` with `RequestRedirect`
//! is `IncompatibleFilters`. Values written into heads (header names and
//! values, rewrite and redirect host names and paths) are checked earlier,
//! by the model (`model::validate`): a route with such a value is invalid
//! as a whole object and never reaches this compiler.

use std::time::Duration;

use lb_http::gateway::{
    HeaderModifier, Mirror, PathModifier, Redirect, Rewrite, RuleAction, WeightedBackend,
};
use serde_json::Value;

use super::Ctx;
use super::refs::{backend_id, check_backend};
use super::status::Reason;
use crate::model::gateway::{
    BackendRef, HeaderFilter, PathModifierSpec, RequestMirrorFilter, RouteFilter, RouteTimeouts,
};
use crate::model::validate;

/// A compiled rule action and what went wrong in it.
#[derive(Debug)]
pub(crate) struct RuleOutcome {
    /// The action (backends unresolved when not materialized).
    pub action: RuleAction,
    /// The first unresolved reference.
    pub resolved: Result<(), Reason>,
    /// Why the rule answers 500 because of an unsupported filter.
    pub unsupported: Option<String>,
}

/// What the rule's route and matches allow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RuleKind<'k> {
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: &'k str,
    /// The route's namespace.
    pub ns: &'k str,
    /// Whether every match of the rule is a `PathPrefix` (for `ReplacePrefixMatch`).
    pub prefix_only: bool,
    /// gRPC: fewer filter types, h2c backends.
    pub grpc: bool,
    /// Create backends (only for routes that attached somewhere).
    pub materialize: bool,
}

fn invalid(message: impl Into<String>) -> Reason {
    Reason::new("UnsupportedValue", message)
}

fn header_modifier(f: Option<&HeaderFilter>, field: &str) -> Result<HeaderModifier, Reason> {
    let Some(f) = f else {
        return Err(invalid(format!("{field} is missing")));
    };
    let pairs = |v: &[crate::model::gateway::HeaderValue]| {
        v.iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect::<Vec<_>>()
    };
    Ok(HeaderModifier {
        set: pairs(&f.set),
        add: pairs(&f.add),
        remove: f.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
    })
}

fn path_modifier(p: &PathModifierSpec, prefix_only: bool) -> Result<PathModifier, Reason> {
    match (
        p.type_.as_str(),
        &p.replace_full_path,
        &p.replace_prefix_match,
    ) {
        ("ReplaceFullPath", Some(v), _) => Ok(PathModifier::ReplaceFullPath(v.clone())),
        ("ReplacePrefixMatch", _, Some(v)) if prefix_only => {
            Ok(PathModifier::ReplacePrefixMatch(v.clone()))
        }
        ("ReplacePrefixMatch", _, Some(_)) => Err(invalid(
            "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
        )),
        (t, _, _) => Err(invalid(format!(
            "path modifier {t:?} is incomplete or unknown"
        ))),
    }
}

/// Parses a Gateway API duration (`1h`, `500ms`, `1h2m3s`: one to four
/// number+unit parts, units `h`, `m`, `s`, `ms`). `0s` means no timeout.
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let err = || format!("{s:?} is not a Gateway API duration (e.g. 10s, 500ms, 1h2m)");
    let mut rest = s;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(err());
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).map_err(|_| err())?;
        parts += 1;
        if parts > 4 {
            return Err(err());
        }
    }
    if parts == 0 {
        return Err(err());
    }
    Ok((!total.is_zero()).then_some(total))
}

/// Compiles one rule's filters, backendRefs and timeouts.
pub(crate) fn compile_action(
    ctx: &mut Ctx<'_, '_>,
    k: RuleKind<'_>,
    name: String,
    filters: &[Value],
    backend_refs: &[BackendRef],
    timeouts: Option<&Value>,
) -> Result<RuleOutcome, Reason> {
    let mut out = RuleOutcome {
        action: RuleAction {
            name,
            ..RuleAction::default()
        },
        resolved: Ok(()),
        unsupported: None,
    };
    for (i, raw) in filters.iter().enumerate() {
        let f: RouteFilter = serde_json::from_value(raw.clone())
            .map_err(|e| invalid(format!("filters[{i}]: {e}")))?;
        match f.type_.as_str() {
            "RequestHeaderModifier" => {
                out.action.request_headers =
                    header_modifier(f.request_header_modifier.as_ref(), "requestHeaderModifier")?;
            }
            "ResponseHeaderModifier" => {
                out.action.response_headers = header_modifier(
                    f.response_header_modifier.as_ref(),
                    "responseHeaderModifier",
                )?;
            }
            "RequestRedirect" if !k.grpc => {
                let r = f.request_redirect.unwrap_or_default();
                let status = validate::redirect_status(i64::from(r.status_code.unwrap_or(302)))
                    .map_err(invalid)?;
                let port = r
                    .port
                    .map(|p| validate::port(i64::from(p)))
                    .transpose()
                    .map_err(|e| invalid(format!("redirect {e}")))?;
                if let Some(s) = r.scheme.as_deref() {
                    validate::redirect_scheme(s).map_err(|e| invalid(format!("redirect {e}")))?;
                }
                let path = r
                    .path
                    .as_ref()
                    .map(|p| path_modifier(p, k.prefix_only))
                    .transpose()?;
                out.action.redirect = Some(Redirect {
                    scheme: r.scheme,
                    hostname: r.hostname.map(|h| h.to_ascii_lowercase()),
                    port,
                    path,
                    status,
                });
            }
            "URLRewrite" if !k.grpc => {
                let r = f.url_rewrite.unwrap_or_default();
                let path = r
                    .path
                    .as_ref()
                    .map(|p| path_modifier(p, k.prefix_only))
                    .transpose()?;
                out.action.rewrite = Some(Rewrite {
                    hostname: r.hostname.map(|h| h.to_ascii_lowercase()),
                    path,
                });
            }
            "RequestMirror" => {
                let Some(m) = f.request_mirror else {
                    return Err(invalid("requestMirror is missing"));
                };
                let per_million = mirror_share(&m).map_err(invalid)?;
                match check_backend(ctx.store, k.kind, k.ns, &m.backend_ref) {
                    Ok(s) if k.materialize => {
                        let id = backend_id(ctx, s, k.grpc);
                        out.action.mirrors.push(Mirror {
                            backend: id,
                            per_million,
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if out.resolved.is_ok() {
                            out.resolved = Err(e);
                        }
                    }
                }
            }
            "ExtensionRef" => {
                out.unsupported.get_or_insert_with(|| {
                    format!("filters[{i}] is an ExtensionRef lb cannot resolve")
                });
                if out.resolved.is_ok() {
                    out.resolved = Err(Reason::new(
                        "InvalidKind",
                        format!("filters[{i}]: lb knows no extension filter kinds"),
                    ));
                }
            }
            other => {
                out.unsupported
                    .get_or_insert_with(|| format!("filters[{i}] type {other} is not supported"));
            }
        }
    }
    if out.action.redirect.is_some() && out.action.rewrite.is_some() {
        return Err(Reason::new(
            "IncompatibleFilters",
            "RequestRedirect and URLRewrite cannot be used together",
        ));
    }
    for (i, b) in backend_refs.iter().enumerate() {
        let mut wb = WeightedBackend {
            backend: None,
            weight: u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0),
            ..WeightedBackend::default()
        };
        for (j, raw) in b.filters.iter().enumerate() {
            let f: RouteFilter = serde_json::from_value(raw.clone())
                .map_err(|e| invalid(format!("backendRefs[{i}].filters[{j}]: {e}")))?;
            match f.type_.as_str() {
                "RequestHeaderModifier" => {
                    wb.request_headers = header_modifier(
                        f.request_header_modifier.as_ref(),
                        "requestHeaderModifier",
                    )?
                }
                "ResponseHeaderModifier" => {
                    wb.response_headers = header_modifier(
                        f.response_header_modifier.as_ref(),
                        "responseHeaderModifier",
                    )?
                }
                other => {
                    out.unsupported.get_or_insert_with(|| {
                        format!("backendRefs[{i}].filters[{j}] type {other} is not supported")
                    });
                }
            }
        }
        match check_backend(ctx.store, k.kind, k.ns, b) {
            Ok(s) if k.materialize => wb.backend = Some(backend_id(ctx, s, k.grpc)),
            Ok(_) => {}
            Err(e) => {
                if out.resolved.is_ok() {
                    out.resolved = Err(e);
                }
            }
        }
        out.action.backends.push(wb);
    }
    if let Some(t) = timeouts {
        let t: RouteTimeouts =
            serde_json::from_value(t.clone()).map_err(|e| invalid(format!("timeouts: {e}")))?;
        let parse = |s: Option<&str>| {
            s.map(parse_duration)
                .transpose()
                .map(Option::flatten)
                .map_err(invalid)
        };
        out.action.request_timeout = parse(t.request.as_deref())?;
        out.action.backend_timeout = parse(t.backend_request.as_deref())?;
    }
    if out.unsupported.is_some()
        || (out.action.backends.is_empty() && out.action.redirect.is_none())
    {
        out.action.fixed_status = Some(500);
    }
    Ok(out)
}

/// Requests per million a `RequestMirror` copies: `percent`, else
/// `fraction` (denominator 100 by default), else all of them.
fn mirror_share(m: &RequestMirrorFilter) -> Result<u32, String> {
    let share = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => return Err("requestMirror sets both percent and fraction".into()),
        (Some(p), None) if (0..=100).contains(&p) => i64::from(p) * 10_000,
        (Some(p), None) => return Err(format!("requestMirror percent {p} is not within 0-100")),
        (None, Some(f)) => {
            let d = f.denominator.unwrap_or(100);
            if d < 1 || f.numerator < 0 || f.numerator > d {
                return Err(format!(
                    "requestMirror fraction {}/{d} is not a fraction of at most 1",
                    f.numerator
                ));
            }
            i64::from(f.numerator) * 1_000_000 / i64::from(d)
        }
        (None, None) => 1_000_000,
    };
    Ok(u32::try_from(share).unwrap_or(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_shares_from_percent_or_fraction() {
        let m = |percent, fraction: Option<(i32, Option<i32>)>| RequestMirrorFilter {
            backend_ref: BackendRef::default(),
            percent,
            fraction: fraction.map(|(numerator, denominator)| crate::model::gateway::Fraction {
                numerator,
                denominator,
            }),
        };
        assert_eq!(mirror_share(&m(None, None)), Ok(1_000_000));
        assert_eq!(mirror_share(&m(Some(50), None)), Ok(500_000));
        assert_eq!(mirror_share(&m(Some(0), None)), Ok(0));
        assert_eq!(mirror_share(&m(None, Some((1, Some(3))))), Ok(333_333));
        assert_eq!(mirror_share(&m(None, Some((25, None)))), Ok(250_000));
        for bad in [
            m(Some(101), None),
            m(Some(-1), None),
            m(Some(5), Some((1, None))),
            m(None, Some((2, Some(1)))),
            m(None, Some((1, Some(0)))),
        ] {
            assert!(mirror_share(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_follow_the_gateway_api_format() {
        let ok = [
            ("10s", 10_000),
            ("500ms", 500),
            ("1h2m", 3_720_000),
            ("1m30s", 90_000),
            ("1h1m1s1ms", 3_661_001),
        ];
        for (s, ms) in ok {
            assert_eq!(
                parse_duration(s),
                Ok(Some(Duration::from_millis(ms))),
                "{s}"
            );
        }
        assert_eq!(parse_duration("0s"), Ok(None));
        for bad in ["", "10", "1d", "s", "123456s", "1h1m1s1ms1s", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
