//! Bearer tokens that verified, remembered until they expire: a client sends the same token on
//! every request for its lifetime, and checking its signature each time was the largest single
//! cost of authentication (an ECDSA or SM2 verification per request).
//!
//! Why serving a remembered token is as strict as verifying it (see ARCHITECTURE.md):
//! - The key is the SHA-256 of the whole compact token, signature included: a token differing in
//!   any byte (a forged signature over the same header and claims) is another key and is verified
//!   afresh. Comparing digests also means a look-up's timing says nothing about a stored token.
//! - Only tokens that verified are stored; a refusal is never remembered, so forgeries can neither
//!   fill the cache nor be answered from it.
//! - `exp` and `nbf` are checked again on every hit with the same rule as [`jwt::verify`] (the
//!   time-to-live given to the cache only frees the memory); an expired hit is refused and
//!   dropped.
//! - An entry names the key set it was verified with; once the JWKS is replaced (a refresh, a
//!   rotation) it no longer counts and the token is verified again against the new keys, so a key
//!   that left the set stops being honoured at once.
//! - Audience and issuer are the process's `[auth]` settings, fixed while it runs, and were checked
//!   when the token was stored.

use super::Principal;
use super::jwt::{self, Expectations, TokenError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A token that verified, as the layers use it.
struct Verified {
    principal: Arc<Principal>,
    expiry: i64,
    not_before: Option<i64>,
    /// The key set ([`super::jwks::KeySet::generation`]) that verified it.
    generation: u64,
    /// When the cache may forget it (just after `exp` plus leeway).
    forget_after: Duration,
}

struct ForgetAtExpiry;

impl moka::Expiry<[u8; 32], Arc<Verified>> for ForgetAtExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        v: &Arc<Verified>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(v.forget_after)
    }
}

/// The verified-token cache and its counters.
pub struct TokenCache {
    /// `None`: disabled (`[auth] token-cache-entries = 0`), every request verifies.
    entries: Option<moka::sync::Cache<[u8; 32], Arc<Verified>>>,
    hits: AtomicU64,
    verifications: AtomicU64,
}

/// What the cache knows of a token.
pub enum Lookup {
    /// Verified earlier against the keys in force, and still within its lifetime.
    Accepted(Arc<Principal>),
    /// Verified earlier, but its lifetime is over (or not begun): refused without a verification.
    Refused(TokenError),
    /// Not known (or known under keys no longer in force): verify it.
    Unknown,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0: none kept).
    pub fn new(capacity: u64) -> TokenCache {
        TokenCache {
            entries: (capacity > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(capacity)
                    .expire_after(ForgetAtExpiry)
                    .build()
            }),
            hits: AtomicU64::new(0),
            verifications: AtomicU64::new(0),
        }
    }

    /// The token, if it verified earlier against key set `generation` and is still valid now.
    pub fn lookup(&self, token: &str, generation: u64, exp: &Expectations<'_>) -> Lookup {
        let Some(entries) = &self.entries else {
            return self.miss();
        };
        let key = openssl::sha::sha256(token.as_bytes());
        let Some(v) = entries.get(&key) else {
            return self.miss();
        };
        if v.generation != generation {
            entries.invalidate(&key);
            return self.miss();
        }
        if let Err(e) = jwt::check_lifetime(v.expiry, v.not_before, exp) {
            // Expired for good; a token not valid yet was not stored, unless the clock went back.
            entries.invalidate(&key);
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Refused(e);
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Lookup::Accepted(v.principal.clone())
    }

    fn miss(&self) -> Lookup {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        Lookup::Unknown
    }

    /// Remembers a token that `jwt::verify` accepted (its claims) against key set `generation`.
    pub fn remember(
        &self,
        token: &str,
        generation: u64,
        claims: &serde_json::Value,
        principal: Arc<Principal>,
        exp: &Expectations<'_>,
    ) {
        let Some(entries) = &self.entries else {
            return;
        };
        // `verify` refuses a token without `exp`; nothing without one is ever kept.
        let Some(expiry) = claims["exp"].as_i64() else {
            return;
        };
        let left = expiry.saturating_add(exp.leeway_secs) - exp.now_secs;
        if left < 0 {
            return;
        }
        let v = Verified {
            principal,
            expiry,
            not_before: claims["nbf"].as_i64(),
            generation,
            forget_after: Duration::from_secs(left as u64 + 1),
        };
        entries.insert(openssl::sha::sha256(token.as_bytes()), Arc::new(v));
    }

    /// Prometheus text: hits and signature verifications.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP huitong_token_cache_total Bearer tokens answered from the verified-token cache (hit) or by verifying their signature (miss).\n\
             # TYPE huitong_token_cache_total counter\n\
             huitong_token_cache_total{{result=\"hit\"}} {}\n\
             huitong_token_cache_total{{result=\"miss\"}} {}\n",
            self.hits.load(Ordering::Relaxed),
            self.verifications.load(Ordering::Relaxed),
        )
    }
}
