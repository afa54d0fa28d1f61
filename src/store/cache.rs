//! A moka cache in front of any [`Store`] for reads by id and by version.

/// Placeholder until implemented.
pub struct CachedStore {}
