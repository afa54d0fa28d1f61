//! Running a [`SearchPlan`] against a store: one page of matches in a stable order, the cursors of
//! the neighbouring pages, the total, and `_include`/`_revinclude` (all of them for the page's
//! matches: never truncated; `:iterate` runs to a fixed point, bounded by [`MAX_ITERATIONS`] with
//! a warning when more were left).

use super::plan::*;
use super::sql;
use crate::store::{ResourceKey, Store, StoreError, StoredVersion, split_contained_key};
use std::collections::HashSet;
use std::sync::Arc;

/// Rounds of `:iterate` before the search stops and says so.
pub const MAX_ITERATIONS: usize = 8;

/// Keys per statement when fetching includes (bounds the argument count).
const CHUNK: usize = 400;

/// One page of a search.
#[derive(Debug, Default)]
pub struct SearchPage {
    /// The matches, in order.
    pub matches: Vec<Arc<StoredVersion>>,
    /// `_include`d and `_revinclude`d resources (each once, none of them also a match).
    pub included: Vec<Arc<StoredVersion>>,
    pub total: Option<u64>,
    pub next: Option<Cursor>,
    pub previous: Option<Cursor>,
    /// Problems worth telling the client (an `:iterate` bound reached).
    pub warnings: Vec<String>,
}

async fn read_live(
    store: &dyn Store,
    keys: &[ResourceKey],
) -> Result<Vec<Arc<StoredVersion>>, StoreError> {
    let mut out = Vec::with_capacity(keys.len());
    for (t, id) in keys {
        if let Some((container_type, container_id, cid)) = split_contained_key(id) {
            if let Some(v) = read_contained(store, container_type, container_id, t, cid).await? {
                out.push(v);
            }
            continue;
        }
        // A key whose resource was deleted between the query and the read is simply gone.
        if let Some(v) = store.read(t, id).await?
            && !v.is_deleted()
        {
            out.push(v);
        }
    }
    Ok(out)
}

/// A contained resource as a version of its own: the container's version, with the contained
/// resource as its body and its [`contained_key`](crate::store::contained_key) as its id.
async fn read_contained(
    store: &dyn Store,
    container_type: &str,
    container_id: &str,
    ty: &str,
    cid: &str,
) -> Result<Option<Arc<StoredVersion>>, StoreError> {
    let Some(container) = store.read(container_type, container_id).await? else {
        return Ok(None);
    };
    let Some(body) = &container.body else {
        return Ok(None);
    };
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| StoreError::Backend(format!("stored {container_type}/{container_id}: {e}")))?;
    let found = json
        .get("contained")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["resourceType"] == ty && c["id"] == cid);
    let Some(found) = found else {
        return Ok(None);
    };
    let bytes = serde_json::to_vec(found)
        .map_err(|e| StoreError::Backend(format!("contained {ty}/{cid}: {e}")))?;
    Ok(Some(Arc::new(StoredVersion {
        resource_type: ty.to_string(),
        id: crate::store::contained_key(container_type, container_id, cid),
        body: Some(bytes.into()),
        ..(*container).clone()
    })))
}

/// Runs one page of `plan`.
pub async fn execute(store: &dyn Store, plan: &SearchPlan) -> Result<SearchPage, StoreError> {
    let dialect = store.dialect();
    let mut page = SearchPage::default();
    if plan.total != Total::None || plan.summary == Some(Summary::Count) {
        page.total = Some(store.query_count(sql::count(plan, dialect)).await?);
    }
    if plan.summary == Some(Summary::Count) || plan.count == 0 {
        return Ok(page);
    }
    // One more than asked tells whether another page exists in the direction of travel.
    let mut keys = store
        .query_keys(sql::page(plan, dialect, plan.count + 1))
        .await?;
    let more = keys.len() > plan.count;
    keys.truncate(plan.count);
    let backwards = matches!(plan.cursor, Cursor::Before(..));
    if backwards {
        keys.reverse();
    }
    let first = keys.first().cloned();
    let last = keys.last().cloned();
    if plan.sort.is_empty() {
        let (has_next, has_prev) = match &plan.cursor {
            Cursor::Start => (more, false),
            Cursor::After(..) => (more, true),
            Cursor::Before(..) => (true, more),
            Cursor::Offset(n) => (more, *n > 0),
        };
        if has_next && let Some((t, id)) = &last {
            page.next = Some(Cursor::After(t.clone(), id.clone()));
        }
        if has_prev && let Some((t, id)) = &first {
            page.previous = Some(Cursor::Before(t.clone(), id.clone()));
        }
    } else {
        let offset = match plan.cursor {
            Cursor::Offset(n) => n,
            _ => 0,
        };
        if more {
            page.next = Some(Cursor::Offset(offset + plan.count));
        }
        if offset > 0 {
            page.previous = Some(Cursor::Offset(offset.saturating_sub(plan.count)));
        }
    }
    page.matches = read_live(store, &keys).await?;
    includes(store, plan, &mut page).await?;
    Ok(page)
}

fn key_of(v: &StoredVersion) -> ResourceKey {
    (v.resource_type.clone(), v.id.clone())
}

async fn includes(
    store: &dyn Store,
    plan: &SearchPlan,
    page: &mut SearchPage,
) -> Result<(), StoreError> {
    if plan.include.is_empty() && plan.revinclude.is_empty() {
        return Ok(());
    }
    let dialect = store.dialect();
    let mut seen: HashSet<ResourceKey> = page.matches.iter().map(|v| key_of(v)).collect();
    // Round 0 starts from the matches with every include; later rounds start from what the
    // previous round added, with the `:iterate` ones only.
    let mut frontier: Vec<ResourceKey> = seen.iter().cloned().collect();
    frontier.sort();
    for round in 0..=MAX_ITERATIONS {
        if frontier.is_empty() {
            break;
        }
        if round == MAX_ITERATIONS {
            page.warnings.push(format!(
                "_include/_revinclude :iterate stopped after {MAX_ITERATIONS} rounds; {} resources were not followed further",
                frontier.len()
            ));
            break;
        }
        let mut found: Vec<ResourceKey> = Vec::new();
        for inc in plan.include.iter().filter(|i| round == 0 || i.iterate) {
            let ids: Vec<String> = frontier
                .iter()
                .filter(|(t, _)| *t == inc.source)
                .map(|(_, id)| id.clone())
                .collect();
            for chunk in ids.chunks(CHUNK) {
                let q = sql::include_targets(
                    dialect,
                    &inc.source,
                    chunk,
                    inc.param.as_deref(),
                    inc.target.as_deref(),
                );
                found.extend(store.query_keys(q).await?);
            }
        }
        for inc in plan.revinclude.iter().filter(|i| round == 0 || i.iterate) {
            for chunk in frontier.chunks(CHUNK) {
                let q = sql::revinclude_sources(dialect, &inc.source, inc.param.as_deref(), chunk);
                found.extend(store.query_keys(q).await?);
            }
        }
        let mut next = Vec::new();
        for k in found {
            if seen.insert(k.clone()) {
                next.push(k);
            }
        }
        next.sort();
        let read = read_live(store, &next).await?;
        frontier = read.iter().map(|v| key_of(v)).collect();
        page.included.extend(read);
    }
    Ok(())
}
