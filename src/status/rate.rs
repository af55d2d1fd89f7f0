//! Rates from counters: bytes and frames between two readings, divided by the time between
//! them. Pure: `now` comes in (tokio's clock, the one the broadcast's ticks run on).

use tokio::time::Instant;

/// kbit/s and frames/s between two calls.
#[derive(Debug, Default)]
pub struct RateMeter {
    last: Option<(Instant, u64, u64)>,
}

impl RateMeter {
    /// The rates since the previous call (zeros on the first), for the counters `bytes` and
    /// `frames` read at `now`.
    pub fn update(&mut self, now: Instant, bytes: u64, frames: u64) -> (f64, f64) {
        let out = match self.last {
            Some((t, b, f)) => {
                let dt = now.saturating_duration_since(t).as_secs_f64().max(1e-3);
                (
                    bytes.saturating_sub(b) as f64 * 8.0 / dt / 1000.0,
                    frames.saturating_sub(f) as f64 / dt,
                )
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, bytes, frames));
        out
    }

    /// Whether it has a reading.
    pub fn started(&self) -> bool {
        self.last.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_between_readings() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.update(t0, 0, 0), (0.0, 0.0));
        let (kbps, fps) = m.update(t0 + Duration::from_secs(2), 250_000, 50);
        assert_eq!((kbps, fps), (1000.0, 25.0));
        assert!(m.started());
    }
}
