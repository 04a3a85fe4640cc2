//! Benchmark harness and the echo backend used by tests, demos and benchmarks.
#![forbid(unsafe_code)]

pub mod echo;
pub mod harness;
pub mod proxies;
pub mod report;
pub mod scenarios;

pub use echo::EchoServer;
