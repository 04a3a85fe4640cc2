//! The benchmark scenarios. Each returns the markdown body of its report.

pub mod conns;
pub mod http1;
pub mod idle;
pub mod l4;
pub mod reload;
pub mod reload_targets;
pub mod scale;

/// Options common to every scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds per load run.
    pub seconds: u32,
    /// Interleaved rounds; medians are reported.
    pub rounds: usize,
    /// Client connections for throughput loads.
    pub connections: u32,
    /// The backend behind the proxies (`--backend nginx|echo`).
    pub backend: crate::backends::Backend,
    /// Idle client connections per proxy in `conns` (`--idle`).
    pub idle: usize,
    /// Configuration changes per proxy in `reload` (`--changes`).
    pub changes: u32,
    /// Object counts for `scale` (`--objects 1000,10000`).
    pub objects: Vec<usize>,
}
