//! The lb data plane: one worker thread per core, each with its own runtime,
//! SO_REUSEPORT listeners and counters, reading configuration only through the
//! immutable snapshot published at a single swap point.
#![deny(unsafe_code)]

pub mod conntrack;
pub mod counters;
pub mod error;
pub mod flowhash;
pub mod listener;
pub mod maglev;
pub mod runtime;
pub mod snapshot;
pub mod stream;
#[allow(unsafe_code)]
pub mod uring;

pub use error::Error;
