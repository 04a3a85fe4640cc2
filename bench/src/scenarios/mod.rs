//! The benchmark scenarios. Each returns the markdown body of its report.

pub mod http1;

/// Options common to every scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds per load run.
    pub seconds: u32,
    /// Interleaved rounds; medians are reported.
    pub rounds: usize,
    /// Client connections for throughput loads.
    pub connections: u32,
}
