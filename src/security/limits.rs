//! Per-client token buckets: `rate` tokens per second up to `burst`; a request takes one token,
//! and a client with none left is told how long to wait (429 with `Retry-After`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Clients tracked before idle buckets are dropped (bounds memory under address spraying).
const MAX_CLIENTS: usize = 100_000;

/// The rate limiter of the HTTP layer.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `client`; `Err(seconds to wait)` when there is none.
    pub fn take(&self, client: &str) -> Result<(), u64> {
        self.take_at(client, Instant::now())
    }

    fn take_at(&self, client: &str, now: Instant) -> Result<(), u64> {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() >= MAX_CLIENTS && !b.contains_key(client) {
            // Full buckets are the same as no bucket: drop them.
            let (rate, burst) = (self.rate, self.burst);
            b.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = b.entry(client.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_empties_and_refills() {
        let l = RateLimiter::new(1.0, 2.0);
        let t0 = Instant::now();
        assert!(l.take_at("a", t0).is_ok());
        assert!(l.take_at("a", t0).is_ok());
        assert_eq!(l.take_at("a", t0), Err(1));
        // Another client has its own bucket.
        assert!(l.take_at("b", t0).is_ok());
        assert!(l.take_at("a", t0 + Duration::from_millis(1100)).is_ok());
    }
}
