//! The lb appliance: its configuration, the object sources (manifest files
//! and the Kubernetes API server), the load path into the compiler
//! ([`lb_compile`]), publication of snapshots to the data plane's workers,
//! status write-back, leader election, the VIP interface, the admin API,
//! systemd integration and the `lb` command.
#![forbid(unsafe_code)]

pub mod admin;
pub mod check;
pub mod config;
pub mod config_reload;
pub mod control_state;
pub mod error;
pub mod explain;
pub mod health;
pub mod kube_client;
pub mod leader;
pub mod listeners;
pub mod logging;
pub mod pipeline;
pub mod publish;
pub mod sd_notify;
pub mod serve;
pub mod source;
pub mod vip_iface;
