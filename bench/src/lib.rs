//! Benchmark harness and the echo backend used by tests, demos and benchmarks.
#![forbid(unsafe_code)]

pub mod backends;
pub mod chart;
pub mod cluster;
pub mod echo;
pub mod harness;
pub mod kube_api;
pub mod kube_load;
pub mod l4_proxies;
pub mod pod_runner;
pub mod proxies;
pub mod report;
pub mod scenarios;
pub mod sys;
pub mod udp_echo;

pub use echo::EchoServer;
