//! The search index rows of one resource in SQLite's `idx_*` tables, kept in step with its
//! current version.
//!
//! A new version changes few of its index rows (an ADT update re-sends the same patient; an
//! edit touches one element). Deleting every row and inserting them all again dirtied one page of
//! each table's lookup B-tree per row, and those pages are spread over the whole tree: that was
//! most of what a write cost on disk. So a write reads the rows it had (one primary-key prefix
//! scan per table, whose leaf pages are adjacent), deletes only those that are gone and inserts
//! only those that are new. A resource's rows are still exactly those of its current version.

use super::db_err;
use crate::store::{CONTAINED_MARK, CONTAINER_MARK, IndexRows, StoreError, contained_key};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, params_from_iter};
use std::collections::HashSet;
use std::sync::LazyLock;

/// One column value of an index row. REAL values are compared by their bits: what SQLite gives
/// back is the exact `f64` that was bound.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Cell {
    Text(String),
    Int(i64),
    Real(u64),
}

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Cell::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Cell::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Cell::Real(bits) => ToSqlOutput::Borrowed(ValueRef::Real(f64::from_bits(*bits))),
        })
    }
}

/// The columns of an index row after its owner's `(resource_type, id)`, in table order.
type Row = Vec<Cell>;

fn text(s: &str) -> Cell {
    Cell::Text(s.to_owned())
}

fn opt(s: &Option<String>) -> Cell {
    // A missing part is '' in the tables, so that every column can be part of the key.
    text(s.as_deref().unwrap_or(""))
}

fn real(v: f64) -> Cell {
    Cell::Real(v.to_bits())
}

/// The index tables and their columns after `(resource_type, id)`.
const TABLES: [(&str, &[&str]); 7] = [
    ("idx_string", &["param", "norm", "exact"]),
    ("idx_token", &["param", "system", "code", "text"]),
    (
        "idx_reference",
        &["param", "url", "target_type", "target_id"],
    ),
    ("idx_date", &["param", "low", "high"]),
    ("idx_number", &["param", "value"]),
    (
        "idx_quantity",
        &[
            "param",
            "value",
            "system",
            "code",
            "unit",
            "canonical_value",
            "canonical_code",
        ],
    ),
    ("idx_uri", &["param", "uri"]),
];

/// The statements of one table, built once.
struct TableSql {
    columns: usize,
    select: String,
    insert: String,
    delete_row: String,
    delete_all: String,
}

static SQL: LazyLock<Vec<TableSql>> = LazyLock::new(|| {
    TABLES
        .iter()
        .map(|(table, columns)| {
            let owner = "resource_type = ? AND id = ?";
            let marks = vec!["?"; columns.len() + 2].join(", ");
            let each = columns
                .iter()
                .map(|c| format!(" AND {c} = ?"))
                .collect::<String>();
            TableSql {
                columns: columns.len(),
                select: format!("SELECT {} FROM {table} WHERE {owner}", columns.join(", ")),
                // Duplicates of one resource collapse on the primary key.
                insert: format!(
                    "INSERT INTO {table} (resource_type, id, {}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                    columns.join(", ")
                ),
                delete_row: format!("DELETE FROM {table} WHERE {owner}{each}"),
                delete_all: format!("DELETE FROM {table} WHERE {owner}"),
            }
        })
        .collect()
});

/// The rows of `rows`, per table in [`TABLES`] order.
fn by_table(rows: &IndexRows) -> [Vec<Row>; 7] {
    [
        rows.strings
            .iter()
            .map(|r| vec![text(&r.param), text(&r.norm), text(&r.exact)])
            .collect(),
        rows.tokens
            .iter()
            .map(|r| vec![text(&r.param), opt(&r.system), text(&r.code), opt(&r.text)])
            .collect(),
        rows.references
            .iter()
            .map(|r| {
                vec![
                    text(&r.param),
                    text(&r.url),
                    opt(&r.target_type),
                    opt(&r.target_id),
                ]
            })
            .collect(),
        rows.dates
            .iter()
            .map(|r| vec![text(&r.param), Cell::Int(r.low), Cell::Int(r.high)])
            .collect(),
        rows.numbers
            .iter()
            .map(|r| vec![text(&r.param), real(r.value)])
            .collect(),
        rows.quantities
            .iter()
            .map(|r| {
                vec![
                    text(&r.param),
                    real(r.value),
                    opt(&r.system),
                    opt(&r.code),
                    opt(&r.unit),
                    real(r.canonical_value),
                    text(&r.canonical_code),
                ]
            })
            .collect(),
        rows.uris
            .iter()
            .map(|r| vec![text(&r.param), text(&r.uri)])
            .collect(),
    ]
}

fn cell(v: ValueRef<'_>) -> Result<Cell, StoreError> {
    match v {
        ValueRef::Text(t) => Ok(Cell::Text(String::from_utf8_lossy(t).into_owned())),
        ValueRef::Integer(i) => Ok(Cell::Int(i)),
        ValueRef::Real(r) => Ok(real(r)),
        other => Err(StoreError::Backend(format!(
            "unexpected {:?} value in an index table",
            other.data_type()
        ))),
    }
}

/// The rows one table holds for `(rt, id)`.
fn stored(
    conn: &Connection,
    sql: &TableSql,
    rt: &str,
    id: &str,
) -> Result<HashSet<Row>, StoreError> {
    let mut st = conn.prepare_cached(&sql.select).map_err(db_err)?;
    let mut rows = st.query(rusqlite::params![rt, id]).map_err(db_err)?;
    let mut out = HashSet::new();
    while let Some(r) = rows.next().map_err(db_err)? {
        let row = (0..sql.columns)
            .map(|i| r.get_ref(i).map_err(db_err).and_then(cell))
            .collect::<Result<Row, _>>()?;
        out.insert(row);
    }
    Ok(out)
}

/// The parameters of a statement on one row: its owner's `(resource_type, id)`, then its columns.
fn owned<'a>(owner: &'a (&str, &str), row: &'a [Cell]) -> impl Iterator<Item = &'a dyn ToSql> {
    [&owner.0 as &dyn ToSql, &owner.1 as &dyn ToSql]
        .into_iter()
        .chain(row.iter().map(|c| c as &dyn ToSql))
}

/// Makes the index rows of `(rt, id)` exactly `rows`. `had_rows` is false for a first version,
/// which has nothing to compare with; an empty `rows` (a delete) removes them all.
///
/// Contained resources are rows under keys of their own ([`contained_key`]), tied to the
/// container by marker rows on both sides ([`CONTAINED_MARK`], [`CONTAINER_MARK`]). They are
/// few, so they are replaced wholesale: the ones the container had (its old markers) lose all
/// their rows, the ones it has now get theirs.
pub(super) fn sync(
    conn: &Connection,
    rt: &str,
    id: &str,
    rows: &IndexRows,
    had_rows: bool,
) -> Result<(), StoreError> {
    if had_rows {
        for (ty, cid) in contained_of(conn, rt, id)? {
            let key = contained_key(rt, id, &cid);
            for sql in SQL.iter() {
                conn.prepare_cached(&sql.delete_all)
                    .and_then(|mut st| st.execute(rusqlite::params![ty, key]))
                    .map_err(db_err)?;
            }
        }
    }
    let mut own = by_table(rows);
    for c in &rows.contained {
        own[1].push(marker(CONTAINED_MARK, &c.resource_type, &c.id));
    }
    write_rows(conn, (rt, id), own, had_rows)?;
    for c in &rows.contained {
        let key = contained_key(rt, id, &c.id);
        let mut tables = by_table(&c.rows);
        tables[1].push(marker(CONTAINER_MARK, rt, id));
        write_rows(
            conn,
            (c.resource_type.as_str(), key.as_str()),
            tables,
            false,
        )?;
    }
    Ok(())
}

/// A marker token row (see [`CONTAINED_MARK`]).
fn marker(param: &str, system: &str, code: &str) -> Row {
    vec![text(param), text(system), text(code), text("")]
}

/// The (type, id) of the contained resources `(rt, id)` has rows for.
fn contained_of(
    conn: &Connection,
    rt: &str,
    id: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT system, code FROM idx_token WHERE resource_type = ? AND id = ? AND param = ?",
        )
        .map_err(db_err)?;
    let found = st
        .query_map(rusqlite::params![rt, id, CONTAINED_MARK], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(db_err)?;
    found.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

/// Makes the rows of `owner` exactly `tables` (per table in [`TABLES`] order).
fn write_rows(
    conn: &Connection,
    owner: (&str, &str),
    tables: [Vec<Row>; 7],
    had_rows: bool,
) -> Result<(), StoreError> {
    let (rt, id) = owner;
    for (table, (sql, mut new)) in SQL.iter().zip(tables).enumerate() {
        if had_rows {
            if new.is_empty() {
                conn.prepare_cached(&sql.delete_all)
                    .and_then(|mut st| st.execute(rusqlite::params![rt, id]))
                    .map_err(db_err)?;
                continue;
            }
            let old = stored(conn, sql, rt, id)?;
            let keep: HashSet<&Row> = new.iter().collect();
            let gone: Vec<&Row> = old.iter().filter(|r| !keep.contains(r)).collect();
            if !gone.is_empty() {
                let mut st = conn.prepare_cached(&sql.delete_row).map_err(db_err)?;
                for row in gone {
                    st.execute(params_from_iter(owned(&owner, row)))
                        .map_err(db_err)?;
                }
            }
            new.retain(|r| !old.contains(r));
        }
        if !new.is_empty() {
            let mut st = conn.prepare_cached(&sql.insert).map_err(db_err)?;
            for row in &new {
                st.execute(params_from_iter(owned(&owner, row)))
                    .map_err(db_err)?;
            }
            if TABLES[table].0 == "idx_date" {
                widen_spans(conn, rt, &new)?;
            }
        }
    }
    Ok(())
}

/// Keeps `idx_date_span` at least the longest `high - low` of each parameter of type `rt`, for
/// the date rows just inserted (`param`, `low`, `high`).
fn widen_spans(conn: &Connection, rt: &str, inserted: &[Row]) -> Result<(), StoreError> {
    let mut longest: Vec<(&str, i64)> = Vec::new();
    for row in inserted {
        let [Cell::Text(param), Cell::Int(low), Cell::Int(high)] = row.as_slice() else {
            continue;
        };
        let span = high.saturating_sub(*low);
        match longest.iter_mut().find(|(p, _)| p == param) {
            Some((_, s)) => *s = (*s).max(span),
            None => longest.push((param, span)),
        }
    }
    let mut st = conn
        .prepare_cached(
            "INSERT INTO idx_date_span (resource_type, param, span) VALUES (?, ?, ?)
             ON CONFLICT (resource_type, param) DO UPDATE SET span = excluded.span
             WHERE excluded.span > idx_date_span.span",
        )
        .map_err(db_err)?;
    for (param, span) in longest {
        st.execute(rusqlite::params![rt, param, span])
            .map_err(db_err)?;
    }
    Ok(())
}
