//! The error type of the data-plane core.

use std::net::SocketAddr;

/// Errors raised while setting up or running workers and listeners.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that failed.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A worker thread or its runtime could not be started.
    #[error("cannot start worker {index}: {source}")]
    Worker {
        /// Worker index.
        index: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// `io = "uring"` was demanded and io_uring cannot be used.
    #[error("io_uring unavailable: {0}")]
    Uring(String),
}
