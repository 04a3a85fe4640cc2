//! Range checks of the timeouts and connection bounds in `lb.toml`: every
//! duration that is added to an `Instant` is capped (an hour-count that
//! overflows would otherwise panic the worker that adds it), and the
//! deadlines that protect against slow peers must be more than zero.

use std::time::Duration;

use crate::config::{Config, format_duration};

/// The longest timeout accepted anywhere in `[runtime]`, `[http]`,
/// `[http2]` and `[loadbalancer]`: a week.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks the timeouts and bounds of `cfg`.
pub(crate) fn validate(cfg: &Config) -> Result<(), String> {
    let (r, h, h2, lb) = (&cfg.runtime, &cfg.http, &cfg.http2, &cfg.loadbalancer);
    for (key, d) in [
        ("runtime.shutdown_grace", r.shutdown_grace),
        ("http.header_read_timeout", h.header_read_timeout),
        ("http.idle_timeout", h.idle_timeout),
        ("http.connect_timeout", h.connect_timeout),
        ("http.response_timeout", h.response_timeout),
        ("http.body_timeout", h.body_timeout),
        ("http.tunnel_idle_timeout", h.tunnel_idle_timeout),
        ("http2.goaway_timeout", h2.goaway_timeout),
        ("loadbalancer.connect_timeout", lb.connect_timeout),
        ("loadbalancer.idle_timeout", lb.idle_timeout),
        ("loadbalancer.udp_idle_timeout", lb.udp_idle_timeout),
        ("loadbalancer.endpoint_grace", lb.endpoint_grace),
    ] {
        if d > MAX_TIMEOUT {
            return Err(format!(
                "{key}: {} is more than the longest timeout, {}",
                format_duration(d),
                format_duration(MAX_TIMEOUT)
            ));
        }
    }
    if r.send_timeout > lb_core::limits::MAX_SEND_TIMEOUT {
        return Err(format!(
            "runtime.send_timeout: must be at most {}",
            format_duration(lb_core::limits::MAX_SEND_TIMEOUT)
        ));
    }
    if !r.send_timeout.is_zero() && r.send_timeout < Duration::from_millis(100) {
        return Err("runtime.send_timeout: must be 0 (kernel default) or at least 100ms".into());
    }
    for (key, d) in [
        ("http.body_timeout", h.body_timeout),
        ("http.tunnel_idle_timeout", h.tunnel_idle_timeout),
        ("http2.goaway_timeout", h2.goaway_timeout),
    ] {
        if d.is_zero() {
            return Err(format!("{key}: must be more than zero"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test/lb.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn bound_keys_parse_with_their_defaults() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.runtime.send_timeout, Duration::from_secs(30));
        assert_eq!(cfg.runtime.max_connections, 0);
        assert_eq!(cfg.runtime.max_connections_per_client, 1024);
        assert_eq!(cfg.http.body_timeout, Duration::from_secs(60));
        assert_eq!(cfg.http.body_min_rate, 1024);
        assert_eq!(cfg.http.tunnel_idle_timeout, Duration::from_secs(3600));
        assert_eq!(cfg.http2.goaway_timeout, Duration::from_secs(5));
        let cfg = parse(
            "[runtime]\nsend_timeout = \"2s\"\nmax_connections = 10\nmax_connections_per_client = 3\n[http]\nbody_timeout = \"1s\"\nbody_min_rate = 0\ntunnel_idle_timeout = \"2s\"\n[http2]\ngoaway_timeout = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(cfg.runtime.send_timeout, Duration::from_secs(2));
        assert_eq!(
            (
                cfg.runtime.max_connections,
                cfg.runtime.max_connections_per_client
            ),
            (10, 3)
        );
        assert_eq!(cfg.http.body_min_rate, 0);
        assert_eq!(cfg.http2.goaway_timeout, Duration::from_secs(1));
    }

    #[test]
    fn huge_and_zero_deadlines_are_refused_by_key() {
        for (section, key, value) in [
            ("http", "idle_timeout", "99999999999999h"),
            ("http", "response_timeout", "200h"),
            ("runtime", "shutdown_grace", "9999999999999999m"),
            ("loadbalancer", "idle_timeout", "10000h"),
            ("runtime", "send_timeout", "25h"),
            ("runtime", "send_timeout", "10ms"),
            ("http", "body_timeout", "0"),
            ("http", "tunnel_idle_timeout", "0"),
            ("http2", "goaway_timeout", "0"),
        ] {
            let err = parse(&format!("[{section}]\n{key} = \"{value}\"\n")).unwrap_err();
            assert!(err.contains(&format!("{section}.{key}")), "{err}");
        }
        assert!(parse("[runtime]\nsend_timeout = \"0\"\n").is_ok());
        assert!(parse("[http]\nidle_timeout = \"168h\"\n").is_ok());
    }
}
