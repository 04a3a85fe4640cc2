//! The lb data plane: one worker thread per core, each with its own runtime,
//! io_uring ring (or epoll), SO_REUSEPORT listeners and counters, reading
//! configuration only through the immutable snapshot published at a single
//! swap point; L4 relays with Maglev tables and connection tracking. Only the
//! `uring` module may use `unsafe`.
#![deny(unsafe_code)]

pub mod conntrack;
pub mod counters;
pub mod datagram;
pub mod error;
pub mod flowhash;
pub mod l4;
pub mod limits;
pub mod listener;
pub mod maglev;
pub mod progress;
pub mod runtime;
pub mod snapshot;
pub mod stream;
#[allow(unsafe_code)]
pub mod uring;

pub use error::Error;
