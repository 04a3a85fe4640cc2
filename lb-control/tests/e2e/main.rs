//! End-to-end tests: the real `lb` binary, real echo backends and real
//! clients on loopback.

mod support;

mod access_log;
mod bodies;
mod bounds;
mod check;
mod edge;
mod endpoints;
mod explain;
mod gateway;
mod h2;
mod h2_attacks;
mod ingress_values;
mod io;
mod kube;
mod kube_api_selftest;
mod kube_faults;
mod l4;
mod latency;
mod leader;
mod lifecycle;
mod metrics;
mod operations;
mod ownership;
mod quickstart;
mod reload;
mod rollout;
mod routing;
mod smuggling;
mod source_ranges;
mod status_writeback;
mod systemd;
mod tls;
mod udp;
mod upstream;
mod vip_alloc;
mod vip_failover;
mod vip_iface;
mod websocket;
