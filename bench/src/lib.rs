//! Benchmark harness and the echo backend used by tests, demos and benchmarks.
#![forbid(unsafe_code)]

pub mod harness;

pub mod echo;

pub use echo::EchoServer;
