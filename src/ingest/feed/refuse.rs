//! Refusal rules (`[[refuse]]` in a feed's `mapping.toml`): a record is refused, nothing written,
//! when a search over the stored resources, filled from the record, finds anything. They state
//! the order of a business process as data: a 挂号撤销 (2202) is refused while the visit's fee
//! details (2204) stand, a 费用明细撤销 (2205) once the visit is settled (2207); undoing the later
//! step first (2205, 2208) makes the same record acceptable.
//!
//! The search is the one `GET [type]?criteria` runs, on the store as committed, under the record's
//! locks. It runs once the record's `select` rules have found what they change: a record that
//! names no such thing (another person's visit, a batch never uploaded) is refused for that, which
//! is the first thing to fix; one that does is then checked against the order of the process. A
//! search that cannot run refuses the record too: a rule that cannot be checked must not let the
//! record through.

use super::load::Feed;
use super::map::{Mapped, RecordError};
use crate::rest::AppState;

/// Most matches named in the error (a visit has a handful of fee batches at most).
const NAMED: usize = 5;

/// `Ok` when no refusal rule of the feed finds anything for this record; else one error per
/// rule that did, at the record field its criteria start with.
pub(super) async fn check(
    st: &AppState,
    feed: &Feed,
    mapped: &Mapped,
) -> Result<(), Vec<RecordError>> {
    let mut errors = Vec::new();
    for r in &mapped.refusals {
        let rule = &feed.refusals[r.rule];
        let found =
            match crate::search::conditional_plan(&st.search, &rule.resource_type, &r.criteria) {
                Ok(plan) => st
                    .store
                    .query_keys(crate::search::sql::all(&plan, st.store.dialect()))
                    .await
                    .map_err(|e| format!("store: {e}")),
                Err(e) => Err(super::describe(&e)),
            };
        let message = match found {
            Ok(keys) if keys.is_empty() => continue,
            Ok(keys) => {
                let mut refs: Vec<String> = keys
                    .into_iter()
                    .map(|(_, id)| format!("{}/{id}", rule.resource_type))
                    .collect();
                refs.sort();
                let more = refs.len().saturating_sub(NAMED);
                refs.truncate(NAMED);
                let mut named = refs.join(", ");
                if more > 0 {
                    named.push_str(&format!(" and {more} more"));
                }
                format!(
                    "{}: {} ({named} matches {})",
                    rule.name, rule.message, r.shown
                )
            }
            Err(m) => format!(
                "{}: the refusal rule could not be checked ({} {}: {m}), so the record is refused",
                rule.name, rule.resource_type, r.shown
            ),
        };
        errors.push(RecordError {
            pointer: r.pointer.clone(),
            message,
            expression: None,
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
