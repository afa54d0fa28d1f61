//! The keys bearer tokens are verified with: a JWKS file read at start, or a JWKS URL (`[auth]
//! jwks-url`) fetched at start, cached, and fetched again when the cache goes stale (the
//! response's `Cache-Control: max-age`, else `jwks-refresh-secs`) or when a token names a key the
//! cache does not hold (an identity provider rotating its keys), at most once per
//! `jwks-min-refresh-secs`, so tokens with made-up `kid`s cannot make the gateway hammer the
//! provider.
//!
//! Start-up fails when the first fetch does: a gateway that is up but cannot verify any token
//! looks healthy to its load balancer while refusing every user, and a wrong URL would only show
//! in logs; refusing to start puts the fault where it is fixed (the deployment). Once running, a
//! failed refresh keeps the last good keys and is retried later (logged), so an identity-provider
//! outage does not turn into a gateway outage. Plain `http` is allowed only to a loopback
//! address (a local key service or a test): anywhere else anyone on the path could substitute
//! keys and sign their own tokens. Redirects are not followed, for the same reason.

use super::config::AuthConfig;
use super::jwt::{self, Jwk};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The largest JWKS document accepted (a key set is a few kilobytes).
const MAX_JWKS_BYTES: usize = 1 << 20;
/// The longest a fetched key set is used without asking again, whatever `max-age` says.
const MAX_AGE_CAP: Duration = Duration::from_secs(86_400);

/// One key set as read or fetched. Its generation is unique in the process, so what was verified
/// with it (`tokens::TokenCache`) can tell when it has been replaced.
pub struct KeySet {
    pub keys: Vec<Jwk>,
    pub generation: u64,
}

impl KeySet {
    fn new(keys: Vec<Jwk>) -> Arc<KeySet> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(KeySet {
            keys,
            generation: NEXT.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// Where verification keys come from.
pub enum KeySource {
    /// Read once at start (`jwks-file`), or none.
    Fixed(Arc<KeySet>),
    /// Fetched from `jwks-url` and kept fresh.
    Remote(Arc<RemoteJwks>),
}

/// A JWKS URL and its cached key set.
pub struct RemoteJwks {
    url: reqwest::Url,
    client: reqwest::Client,
    default_max_age: Duration,
    min_interval: Duration,
    cache: RwLock<Cached>,
    /// One fetch at a time (periodic and unknown-kid refreshes alike).
    fetching: tokio::sync::Mutex<()>,
}

struct Cached {
    keys: Arc<KeySet>,
    fresh_until: Instant,
    /// The last refresh an unknown `kid` asked for.
    last_forced: Option<Instant>,
    /// A periodic refresh is under way.
    refreshing: bool,
}

impl KeySource {
    /// Reads the JWKS file or fetches the JWKS URL of `[auth]` (neither: no token verifies).
    pub async fn load(auth: &AuthConfig) -> Result<KeySource, String> {
        match (&auth.jwks_file, &auth.jwks_url) {
            (Some(_), Some(_)) => Err("[auth] has both jwks-file and jwks-url; choose one".into()),
            (Some(f), None) => {
                let bytes = std::fs::read(f)
                    .map_err(|e| format!("cannot read JWKS {}: {e}", f.display()))?;
                let keys = jwt::jwks_from_json(&bytes)
                    .map_err(|e| format!("JWKS {}: {e}", f.display()))?;
                Ok(KeySource::Fixed(KeySet::new(keys)))
            }
            (None, Some(u)) => Ok(KeySource::Remote(Arc::new(
                RemoteJwks::start(u, auth).await?,
            ))),
            (None, None) => Ok(KeySource::none()),
        }
    }

    /// No keys at all.
    pub fn none() -> KeySource {
        KeySource::Fixed(KeySet::new(Vec::new()))
    }

    /// The keys in force. A stale remote key set is still used while a refresh runs behind.
    pub fn current(&self) -> Arc<KeySet> {
        match self {
            KeySource::Fixed(k) => k.clone(),
            KeySource::Remote(r) => r.current(),
        }
    }

    /// The keys after fetching again for a token whose `kid` none of `seen` has (when the rate
    /// limit allows): `None` when nothing new came, so the token's refusal stands.
    pub async fn refreshed_for_unknown_key(&self, seen: &Arc<KeySet>) -> Option<Arc<KeySet>> {
        let KeySource::Remote(r) = self else {
            return None;
        };
        let after = r.refresh_for_unknown_key().await;
        (!Arc::ptr_eq(seen, &after)).then_some(after)
    }

    /// How many keys are in force.
    pub fn len(&self) -> usize {
        self.current().keys.len()
    }

    /// Whether no key is in force.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Refuses a JWKS URL anyone on the network path could answer for.
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("[auth] jwks-url '{url}': {e}"))?;
    match u.scheme() {
        "https" => Ok(u),
        "http" => {
            let host = u.host_str().unwrap_or("");
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
            if loopback {
                Ok(u)
            } else {
                Err(format!(
                    "[auth] jwks-url '{url}': plain http is allowed only to a loopback address (127.0.0.1, ::1, localhost); use https, or anyone on the path could substitute the keys"
                ))
            }
        }
        other => Err(format!(
            "[auth] jwks-url '{url}': scheme '{other}' is not https"
        )),
    }
}

/// `max-age` of a `Cache-Control` value (`no-store`/`no-cache`: zero).
pub fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| {
        let d = d.trim().to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return Some(Duration::ZERO);
        }
        d.strip_prefix("max-age=")?
            .trim_matches('"')
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    })
}

impl RemoteJwks {
    async fn start(url: &str, auth: &AuthConfig) -> Result<RemoteJwks, String> {
        let url = check_url(url)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("[auth] jwks-url: HTTP client: {e}"))?;
        let remote = RemoteJwks {
            url,
            client,
            default_max_age: Duration::from_secs(auth.jwks_refresh_secs),
            min_interval: Duration::from_secs(auth.jwks_min_refresh_secs),
            cache: RwLock::new(Cached {
                keys: KeySet::new(Vec::new()),
                fresh_until: Instant::now(),
                last_forced: None,
                refreshing: false,
            }),
            fetching: tokio::sync::Mutex::new(()),
        };
        let (keys, age) = remote
            .fetch()
            .await
            .map_err(|e| format!("{e}; the gateway does not start without its token keys"))?;
        tracing::info!(url = %remote.url, keys = keys.len(), "JWKS fetched");
        remote.store(keys, age);
        Ok(remote)
    }

    fn current(self: &Arc<Self>) -> Arc<KeySet> {
        let (keys, stale) = {
            let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
            (
                c.keys.clone(),
                Instant::now() >= c.fresh_until && !c.refreshing,
            )
        };
        if stale {
            let begun = {
                let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
                !std::mem::replace(&mut c.refreshing, true)
            };
            // Only inside a runtime (always, for requests); the next request tries again otherwise.
            if begun && let Ok(rt) = tokio::runtime::Handle::try_current() {
                let me = self.clone();
                rt.spawn(async move { me.refresh().await });
            } else if begun {
                self.cache
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .refreshing = false;
            }
        }
        keys
    }

    /// The periodic refresh: a failure keeps the keys and tries again after the least interval.
    async fn refresh(&self) {
        let _one = self.fetching.lock().await;
        let got = self.fetch().await;
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        c.refreshing = false;
        match got {
            Ok((keys, age)) => {
                drop(c);
                self.store(keys, age);
            }
            Err(e) => {
                c.fresh_until = Instant::now() + self.min_interval;
                tracing::warn!(error = %e, "JWKS refresh failed; the last keys stay in force");
            }
        }
    }

    async fn refresh_for_unknown_key(&self) -> Arc<KeySet> {
        let _one = self.fetching.lock().await;
        {
            let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
            if c.last_forced
                .is_some_and(|t| t.elapsed() < self.min_interval)
            {
                // Whatever a concurrent refresh brought is used; no new fetch.
                return c.keys.clone();
            }
            c.last_forced = Some(Instant::now());
        }
        match self.fetch().await {
            Ok((keys, age)) => {
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched again for an unknown key id");
                self.store(keys, age);
            }
            Err(e) => tracing::warn!(error = %e, "JWKS refresh for an unknown key id failed"),
        }
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .clone()
    }

    fn store(&self, keys: Vec<Jwk>, age: Duration) {
        let age = age.clamp(self.min_interval.min(MAX_AGE_CAP), MAX_AGE_CAP);
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        c.keys = KeySet::new(keys);
        c.fresh_until = Instant::now() + age;
    }

    async fn fetch(&self) -> Result<(Vec<Jwk>, Duration), String> {
        let url = &self.url;
        let resp = self
            .client
            .get(url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(|e| format!("cannot fetch JWKS {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("JWKS {url} answered HTTP {}", resp.status()));
        }
        let age = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(self.default_max_age);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("cannot read JWKS {url}: {e}"))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(format!("JWKS {url} is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let keys = jwt::jwks_from_json(&bytes).map_err(|e| format!("JWKS {url}: {e}"))?;
        if keys.is_empty() {
            return Err(format!("JWKS {url} has no keys"));
        }
        Ok((keys, age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_accepted() {
        assert!(check_url("https://sso.example.cn/jwks").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("http://[::1]/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        let e = check_url("http://sso.example.cn/jwks").unwrap_err();
        assert!(e.contains("only to a loopback address"), "{e}");
        assert!(check_url("http://10.0.0.1/jwks").is_err());
        assert!(check_url("ftp://127.0.0.1/jwks").is_err());
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }
}
