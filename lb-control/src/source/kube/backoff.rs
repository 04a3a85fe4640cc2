//! The wait between failed attempts to reach the API server.

use std::time::Duration;

use kube::runtime::utils::Backoff;

/// The shortest wait between failed attempts.
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between failed attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Exponential backoff (x2 from [`MIN_BACKOFF`], capped at [`MAX_BACKOFF`])
/// with full jitter in the upper half, reset after a success.
#[derive(Debug)]
pub struct CappedBackoff {
    next: Duration,
    seed: u64,
}

impl CappedBackoff {
    /// A backoff at its shortest wait.
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.subsec_nanos().into())
            | 1;
        Self {
            next: MIN_BACKOFF,
            seed,
        }
    }
}

impl Default for CappedBackoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift64: jitter only, not security.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        let half = base / 2;
        let jitter = half.mul_f64((self.seed % 1000) as f64 / 1000.0);
        Some(half + jitter)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let mut b = CappedBackoff::new();
        let waits: Vec<_> = (0..12).map(|_| b.next().unwrap()).collect();
        assert!(waits[0] <= MIN_BACKOFF && waits[0] >= MIN_BACKOFF / 2);
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF));
        assert!(waits[11] >= MAX_BACKOFF / 2);
        b.reset();
        assert!(b.next().unwrap() <= MIN_BACKOFF);
    }
}
