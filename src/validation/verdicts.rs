//! Binding verdicts remembered for the process: the same few (value set, system, code, display)
//! questions recur on every resource of a feed, and each asked afresh costs an expansion lookup
//! and several allocations.
//!
//! Invariant: a verdict is only ever answered for the registry generation it was computed under;
//! any change to the registry (a new value set or code system) empties the cache, as the
//! terminology service's own caches are keyed by generation.

use crate::terminology::{CodeCheck, Terminology};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::RwLock;

/// Entries kept before the cache starts over (a feed with ever new codes must not grow it
/// without bound).
const LIMIT: usize = 50_000;

struct Verdict {
    value_set: Box<str>,
    system: Option<Box<str>>,
    code: Box<str>,
    display: Option<Box<str>>,
    check: CodeCheck,
}

impl Verdict {
    fn answers(&self, q: &Question<'_>) -> bool {
        &*self.value_set == q.value_set
            && self.system.as_deref() == q.system
            && &*self.code == q.code
            && self.display.as_deref() == q.display
    }
}

#[derive(Hash)]
struct Question<'q> {
    value_set: &'q str,
    system: Option<&'q str>,
    code: &'q str,
    display: Option<&'q str>,
}

#[derive(Default)]
struct Held {
    generation: u64,
    len: usize,
    /// By the hash of the question; the few collisions share a bucket.
    by_hash: HashMap<u64, Vec<Verdict>, foldhash::fast::RandomState>,
}

#[derive(Default)]
pub(crate) struct Verdicts {
    hasher: foldhash::fast::RandomState,
    held: RwLock<Held>,
}

impl Verdicts {
    /// [`Terminology::validate_code`], answered from the cache when asked before under the
    /// current registry generation.
    pub fn validate_code(
        &self,
        term: &Terminology,
        value_set: &str,
        system: Option<&str>,
        code: &str,
        display: Option<&str>,
    ) -> CodeCheck {
        let generation = term.registry().catalogue().generation();
        let q = Question {
            value_set,
            system,
            code,
            display,
        };
        let hash = self.hasher.hash_one(&q);
        {
            let held = self.held.read().unwrap_or_else(|p| p.into_inner());
            if held.generation == generation
                && let Some(v) = held
                    .by_hash
                    .get(&hash)
                    .and_then(|b| b.iter().find(|v| v.answers(&q)))
            {
                return v.check.clone();
            }
        }
        let check = term.validate_code(value_set, system, code, display);
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        if held.generation != generation || held.len >= LIMIT {
            *held = Held {
                generation,
                ..Held::default()
            };
        }
        let bucket = held.by_hash.entry(hash).or_default();
        if !bucket.iter().any(|v| v.answers(&q)) {
            bucket.push(Verdict {
                value_set: value_set.into(),
                system: system.map(Into::into),
                code: code.into(),
                display: display.map(Into::into),
                check: check.clone(),
            });
            held.len += 1;
        }
        check
    }
}
