//! The lb control plane: configuration, object sources, the object store,
//! validation into domain types, compilation into snapshots, publication,
//! and the admin API.
#![forbid(unsafe_code)]

pub mod admin;
pub mod check;
pub mod compile;
pub mod config;
pub mod config_reload;
pub mod diag;
pub mod endpoints;
pub mod explain;
pub mod gateway;
pub mod health;
pub mod health_spec;
pub mod kube_client;
pub mod l4;
pub mod leader;
pub mod listeners;
pub mod logging;
pub mod model;
pub mod ownership;
pub mod publish;
pub mod raw;
pub mod sd_notify;
pub mod serve;
pub mod source;
pub mod source_ranges;
pub mod store;
pub mod tls;
pub mod vip_alloc;
pub mod vip_iface;
