//! SQL generation from a [`SearchPlan`]: one statement over the head table and the index tables,
//! with `IN (subquery)` sets for every predicate, so chains, `_has`, AND and OR nest without
//! limit. The [`Dialect`] is the seam for other databases: SQLite and PostgreSQL differ here only
//! in placeholders (the statements use row values, `substr`/`length` and `LIKE ... ESCAPE`, which
//! both have).
//!
//! Invariant: index rows exist only for live current versions (a delete removes them), so a
//! predicate's set never needs a join with the heads; the outer query filters `deleted = 0`.

use super::plan::*;
use crate::store::{CONTAINER_MARK, SqlArg, SqlQuery};

/// What differs between SQL databases for the statements generated here.
pub trait Dialect: Send + Sync {
    /// The placeholder for the `n`-th argument (1-based).
    fn placeholder(&self, n: usize) -> String;
}

/// SQLite: `?`.
pub struct Sqlite;

impl Dialect for Sqlite {
    fn placeholder(&self, _n: usize) -> String {
        "?".to_string()
    }
}

/// PostgreSQL: `$1`, `$2`, ...
pub struct Postgres;

impl Dialect for Postgres {
    fn placeholder(&self, n: usize) -> String {
        format!("${n}")
    }
}

/// The SQLite dialect.
pub static SQLITE: Sqlite = Sqlite;

/// Accumulates a statement and its arguments.
struct Sql<'d> {
    dialect: &'d dyn Dialect,
    text: String,
    args: Vec<SqlArg>,
    /// Alias counter for nested head scans.
    alias: usize,
}

impl<'d> Sql<'d> {
    /// An empty statement in `dialect`.
    fn new(dialect: &'d dyn Dialect) -> Sql<'d> {
        Sql {
            dialect,
            text: String::new(),
            args: vec![],
            alias: 0,
        }
    }

    fn arg(&mut self, a: SqlArg) -> String {
        self.args.push(a);
        self.dialect.placeholder(self.args.len())
    }
    fn text(&mut self, s: &str) -> String {
        self.arg(SqlArg::Text(s.to_string()))
    }
    fn int(&mut self, i: i64) -> String {
        self.arg(SqlArg::Int(i))
    }
    fn real(&mut self, r: f64) -> String {
        self.arg(SqlArg::Real(r))
    }
    fn list(&mut self, items: &[String]) -> String {
        let marks: Vec<String> = items.iter().map(|t| self.text(t)).collect();
        if marks.is_empty() {
            // An empty IN list is not valid SQL everywhere; nothing matches it.
            "(NULL)".to_string()
        } else {
            format!("({})", marks.join(", "))
        }
    }
    fn finish(self) -> SqlQuery {
        SqlQuery {
            sql: self.text,
            args: self.args,
        }
    }
}

/// Escapes `%`, `_` and `\` for `LIKE ... ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The comparison of a stored range `[lo, hi]` with a search range `[slo, shi]` for a prefix (R4
/// 3.1.1.4.2); `margin` widens the search range for `ap`.
fn range_condition(
    q: &mut Sql,
    lo: &str,
    hi: &str,
    prefix: Prefix,
    slo: i64,
    shi: i64,
    margin: i64,
) -> String {
    // `{lo} <= b` is implied (a row's low is at most its high) but bounds the scan of the
    // `(type, param, low, high)` index to the searched range instead of every later row.
    let eq = |q: &mut Sql| {
        let (a, b, c) = (q.int(slo), q.int(shi), q.int(shi));
        format!("({lo} >= {a} AND {lo} <= {b} AND {hi} <= {c})")
    };
    match prefix {
        Prefix::Eq => eq(q),
        Prefix::Ne => format!("NOT {}", eq(q)),
        Prefix::Gt => format!("{hi} > {}", q.int(shi)),
        Prefix::Lt => format!("{lo} < {}", q.int(slo)),
        Prefix::Ge => {
            let a = q.int(shi);
            format!("({hi} > {a} OR {})", eq(q))
        }
        Prefix::Le => {
            let a = q.int(slo);
            format!("({lo} < {a} OR {})", eq(q))
        }
        Prefix::Sa => format!("{lo} > {}", q.int(shi)),
        Prefix::Eb => format!("{hi} < {}", q.int(slo)),
        Prefix::Ap => {
            let a = q.int(shi.saturating_add(margin));
            let b = q.int(slo.saturating_sub(margin));
            format!("({lo} <= {a} AND {hi} >= {b})")
        }
    }
}

fn number_condition(
    q: &mut Sql,
    col: &str,
    prefix: Prefix,
    value: f64,
    low: f64,
    high: f64,
) -> String {
    match prefix {
        Prefix::Eq => {
            let (a, b) = (q.real(low), q.real(high));
            format!("({col} >= {a} AND {col} < {b})")
        }
        Prefix::Ne => {
            let (a, b) = (q.real(low), q.real(high));
            format!("NOT ({col} >= {a} AND {col} < {b})")
        }
        Prefix::Gt | Prefix::Sa => format!("{col} > {}", q.real(value)),
        Prefix::Lt | Prefix::Eb => format!("{col} < {}", q.real(value)),
        Prefix::Ge => format!("{col} >= {}", q.real(value)),
        Prefix::Le => format!("{col} <= {}", q.real(value)),
        Prefix::Ap => {
            let d = (value * 0.1).abs();
            let (a, b) = (q.real(value - d), q.real(value + d));
            format!("({col} >= {a} AND {col} <= {b})")
        }
    }
}

/// Where a predicate looks for its rows.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// The keys of every resource of these types that matches: `SELECT resource_type, id`, for
    /// `(type, id) IN (...)`.
    Set(&'a [String]),
    /// The rows of the one resource of this head alias: `SELECT 1`, for `EXISTS (...)`, a probe
    /// of the index table's primary key `(resource_type, id, param, ...)`.
    Probe(&'a str),
}

/// Whether [`key_set`] can probe `p` for one resource ([`Scope::Probe`]); the others are read
/// from the heads or the rows of other resources, and stay sets.
fn probes(p: &Predicate) -> bool {
    match p {
        Predicate::Id(_) | Predicate::LastUpdated { .. } | Predicate::List(_) => false,
        Predicate::Not(inner) => probes(inner),
        _ => true,
    }
}

/// How few resources `p` is likely to match, as a rank (lower is fewer), for choosing the AND
/// term that drives a search; `None` for a complement, which cannot drive. Without statistics
/// this goes by the kind of condition: one id, a reference to one resource, an exact code or
/// string, a closed range, then open ranges and substrings.
fn selectivity(p: &Predicate) -> Option<u8> {
    Some(match p {
        Predicate::Id(_) => 0,
        Predicate::List(_) => 1,
        Predicate::Reference { id, url, .. } if id.is_some() || url.is_some() => 1,
        Predicate::Token { code: Some(_), .. }
        | Predicate::String {
            how: StringMatch::Exact,
            ..
        }
        | Predicate::Uri {
            how: UriMatch::Exact,
            ..
        } => 2,
        Predicate::TokenIn { .. }
        | Predicate::String {
            how: StringMatch::Prefix,
            ..
        }
        | Predicate::Date {
            prefix: Prefix::Eq, ..
        }
        | Predicate::Number {
            prefix: Prefix::Eq, ..
        }
        | Predicate::Quantity {
            prefix: Prefix::Eq, ..
        } => 3,
        Predicate::DateAll { bounds, .. }
            if bounds.iter().any(|b| below(b.prefix)) && bounds.iter().any(|b| above(b.prefix)) =>
        {
            3
        }
        // A chain or `_has` matches about as few as its inner condition, through one more
        // reference.
        Predicate::Chain { inner, .. } | Predicate::Has { inner, .. } => inner
            .iter()
            .map(selectivity)
            .try_fold(0u8, |worst, r| r.map(|r| worst.max(r)))?
            .saturating_add(1),
        Predicate::TokenText { .. }
        | Predicate::Text { .. }
        | Predicate::String {
            how: StringMatch::Contains,
            ..
        }
        | Predicate::Missing { missing: false, .. } => 6,
        Predicate::Missing { missing: true, .. } | Predicate::Not(_) => return None,
        _ => 5,
    })
}

/// Whether a date comparison bounds the matches from above / from below (`lt`, `le`, `eb`, `eq`,
/// `ap` / `gt`, `ge`, `sa`, `eq`, `ap`).
fn below(p: Prefix) -> bool {
    matches!(
        p,
        Prefix::Lt | Prefix::Le | Prefix::Eb | Prefix::Eq | Prefix::Ap
    )
}

fn above(p: Prefix) -> bool {
    matches!(
        p,
        Prefix::Gt | Prefix::Ge | Prefix::Sa | Prefix::Eq | Prefix::Ap
    )
}

/// A stored span (`high - low`) at least this long counts as unbounded: subtracting it from a
/// searched instant could overflow, and it bounds nothing anyway.
const UNBOUNDED_SPAN: i64 = 1 << 62;

/// The condition "a row of `param` satisfies every one of `bounds`", bounded on `low` at both
/// ends where the comparisons allow it so that the `(resource_type, param, low, high)` index is
/// read over one range. `gt`, `ge` and `ap` bound a row's high end; its low end is at most the
/// longest span stored for the parameter below that (`idx_date_span`, kept by the writer,
/// never shrinking), so `low >= bound - span` is implied and bounds the scan. `eb` and `le` imply
/// `low < ...` the same way (a row's low is at most its high).
fn date_all_condition(q: &mut Sql, scope: Scope, param: &str, bounds: &[DateBound]) -> String {
    let mut parts = Vec::new();
    for b in bounds {
        parts.push(range_condition(
            q, "low", "high", b.prefix, b.low, b.high, b.margin,
        ));
    }
    let Scope::Set(types) = scope else {
        // One resource's rows are one primary-key prefix: nothing to bound.
        return parts.join(" AND ");
    };
    for b in bounds {
        let from = match b.prefix {
            Prefix::Gt => b.high,
            Prefix::Ge => b.low,
            Prefix::Ap => b.low.saturating_sub(b.margin),
            Prefix::Eb => {
                parts.push(format!("low < {}", q.int(b.low)));
                continue;
            }
            Prefix::Le => {
                parts.push(format!("low <= {}", q.int(b.high)));
                continue;
            }
            _ => continue,
        };
        let cap = q.int(UNBOUNDED_SPAN);
        let x = q.int(from);
        let min = q.int(i64::MIN);
        let t = q.list(types);
        let p = q.text(param);
        parts.push(format!(
            "low >= (SELECT CASE WHEN MAX(span) < {cap} THEN {x} - MAX(span) ELSE {min} END \
             FROM idx_date_span WHERE resource_type IN {t} AND param = {p})"
        ));
    }
    parts.join(" AND ")
}

/// The rows of `table` for `param` in `scope`, as the start of a SELECT to add conditions to.
fn rows(q: &mut Sql, scope: Scope, table: &str, param: &str) -> String {
    match scope {
        Scope::Set(types) => {
            let t = q.list(types);
            let p = q.text(param);
            format!(
                "SELECT resource_type, id FROM {table} WHERE resource_type IN {t} AND param = {p}"
            )
        }
        Scope::Probe(a) => {
            let p = q.text(param);
            format!(
                "SELECT 1 FROM {table} WHERE resource_type = {a}.resource_type AND id = {a}.id AND param = {p}"
            )
        }
    }
}

/// A SELECT of the resources matching `p` in `scope` (a set of keys of `types`, or the rows of
/// one resource), and whether the predicate is the complement of it.
///
/// `_id`, `_lastUpdated` and `_list` ([`probes`] false) are always sets of `types`.
fn key_set(q: &mut Sql, within: Scope, types: &[String], p: &Predicate) -> (String, bool) {
    let scope = |q: &mut Sql, table: &str, param: &str| rows(q, within, table, param);
    match p {
        Predicate::Id(id) => {
            let t = q.list(types);
            let i = q.text(id);
            (
                format!(
                    "SELECT resource_type, id FROM resource_head WHERE deleted = 0 AND resource_type IN {t} AND id = {i}"
                ),
                false,
            )
        }
        Predicate::LastUpdated { prefix, low, high } => {
            let t = q.list(types);
            let c = range_condition(
                q,
                "last_updated_ms",
                "last_updated_ms",
                *prefix,
                *low,
                *high,
                0,
            );
            (
                format!(
                    "SELECT resource_type, id FROM resource_head WHERE deleted = 0 AND resource_type IN {t} AND {c}"
                ),
                false,
            )
        }
        Predicate::Missing {
            table,
            param,
            missing,
        } => (scope(q, table.name(), param), *missing),
        Predicate::String { param, how, value } => {
            let base = scope(q, "idx_string", param);
            let cond = match how {
                StringMatch::Exact => format!("exact = {}", q.text(value)),
                StringMatch::Prefix => format!(
                    "norm LIKE {} ESCAPE '\\'",
                    q.text(&format!("{}%", like_escape(value)))
                ),
                StringMatch::Contains => format!(
                    "norm LIKE {} ESCAPE '\\'",
                    q.text(&format!("%{}%", like_escape(value)))
                ),
            };
            (format!("{base} AND {cond}"), false)
        }
        Predicate::Token {
            param,
            system,
            code,
        } => {
            let mut s = scope(q, "idx_token", param);
            if let Some(c) = code {
                s.push_str(&format!(" AND code = {}", q.text(c)));
            }
            if let Some(sys) = system {
                s.push_str(&format!(" AND system = {}", q.text(sys)));
            }
            (s, false)
        }
        Predicate::TokenIn { param, codes } => {
            let base = scope(q, "idx_token", param);
            // Grouped by system, so each group is one `code IN (...)` probe of the lookup index
            // (resource_type, param, code, system).
            let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
            for (system, code) in codes {
                match groups.last_mut() {
                    Some((s, cs)) if *s == system.as_str() => cs.push(code.clone()),
                    _ => groups.push((system.as_str(), vec![code.clone()])),
                }
            }
            let alts: Vec<String> = groups
                .iter()
                .map(|(system, cs)| {
                    let list = q.list(cs);
                    let sys = q.text(system);
                    format!("code IN {list} AND system = {sys}")
                })
                .collect();
            let cond = if alts.is_empty() {
                // An empty set matches nothing.
                "1 = 0".to_string()
            } else {
                balanced(&alts, "OR")
            };
            (format!("{base} AND {cond}"), false)
        }
        Predicate::TokenText { param, text } => {
            let base = scope(q, "idx_token", param);
            let v = q.text(&format!("%{}%", like_escape(text)));
            (format!("{base} AND text LIKE {v} ESCAPE '\\'"), false)
        }
        Predicate::Text { param, terms } => {
            // One row per resource holds all its searchable text, so every term is a condition
            // on that row.
            let mut s = scope(q, "idx_string", param);
            for t in terms {
                let pattern = format!("%{}%", like_escape(t));
                s.push_str(&format!(" AND norm LIKE {} ESCAPE '\\'", q.text(&pattern)));
            }
            (s, false)
        }
        Predicate::List(id) => {
            let l = q.text(id);
            let t = q.list(types);
            (
                format!(
                    "SELECT target_type, target_id FROM idx_reference WHERE resource_type = 'List' \
                     AND id = {l} AND param = 'item' AND target_type IN {t}"
                ),
                false,
            )
        }
        Predicate::Date {
            param,
            prefix,
            low,
            high,
            margin,
        } => {
            let base = scope(q, "idx_date", param);
            let c = range_condition(q, "low", "high", *prefix, *low, *high, *margin);
            (format!("{base} AND {c}"), false)
        }
        Predicate::DateAll { param, bounds } => {
            let base = scope(q, "idx_date", param);
            let c = date_all_condition(q, within, param, bounds);
            (format!("{base} AND {c}"), false)
        }
        Predicate::Number {
            param,
            prefix,
            value,
            low,
            high,
        } => {
            let base = scope(q, "idx_number", param);
            let c = number_condition(q, "value", *prefix, *value, *low, *high);
            (format!("{base} AND {c}"), false)
        }
        Predicate::Quantity {
            param,
            prefix,
            value,
            low,
            high,
            system,
            code,
            canonical,
        } => {
            let mut s = scope(q, "idx_quantity", param);
            if let Some(c) = canonical {
                // A UCUM unit: compared in canonical units, whatever unit each row was stored in.
                // (Arguments are bound in the order they appear in the text.)
                let unit = q.text(&c.code);
                let cond = number_condition(q, "canonical_value", *prefix, c.value, c.low, c.high);
                let sys = q.text(crate::terminology::ucum::SYSTEM);
                s.push_str(&format!(
                    " AND canonical_code = {unit} AND {cond} AND system = {sys}"
                ));
                return (s, false);
            }
            let c = number_condition(q, "value", *prefix, *value, *low, *high);
            s.push_str(&format!(" AND {c}"));
            if let Some(sys) = system {
                s.push_str(&format!(" AND system = {}", q.text(sys)));
            }
            if let Some(c) = code {
                let (a, b) = (q.text(c), q.text(c));
                s.push_str(&format!(" AND (code = {a} OR (code = '' AND unit = {b}))"));
            }
            (s, false)
        }
        Predicate::Reference {
            param,
            target_type,
            id,
            url,
        } => {
            let mut s = scope(q, "idx_reference", param);
            if let Some(i) = id {
                s.push_str(&format!(" AND target_id = {}", q.text(i)));
            }
            if let Some(t) = target_type {
                s.push_str(&format!(" AND target_type = {}", q.text(t)));
            }
            if let Some(u) = url {
                s.push_str(&format!(" AND url = {}", q.text(u)));
            }
            (s, false)
        }
        Predicate::Uri { param, how, value } => {
            let base = scope(q, "idx_uri", param);
            let cond = match how {
                UriMatch::Exact => format!("uri = {}", q.text(value)),
                UriMatch::Below => format!(
                    "uri LIKE {} ESCAPE '\\'",
                    q.text(&format!("{}%", like_escape(value)))
                ),
                UriMatch::Above => {
                    let v = q.text(value);
                    format!("substr({v}, 1, length(uri)) = uri")
                }
            };
            (format!("{base} AND {cond}"), false)
        }
        Predicate::Chain {
            param,
            targets,
            inner,
        } => {
            let base = scope(q, "idx_reference", param);
            let tt = q.list(targets);
            let sub = heads_matching(q, targets, std::slice::from_ref(inner));
            (
                format!("{base} AND target_type IN {tt} AND (target_type, target_id) IN ({sub})"),
                false,
            )
        }
        Predicate::Has {
            source,
            param,
            inner,
        } => {
            let head = match within {
                Scope::Set(_) => {
                    let src = q.text(source);
                    let pm = q.text(param);
                    let t = q.list(types);
                    format!(
                        "SELECT target_type, target_id FROM idx_reference WHERE resource_type = {src} AND param = {pm} \
                         AND target_type IN {t}"
                    )
                }
                // Through the target index `(target_id, target_type)`.
                Scope::Probe(a) => {
                    let src = q.text(source);
                    let pm = q.text(param);
                    format!(
                        "SELECT 1 FROM idx_reference WHERE target_id = {a}.id AND target_type = {a}.resource_type \
                         AND resource_type = {src} AND param = {pm}"
                    )
                }
            };
            let sub = heads_matching(q, std::slice::from_ref(source), std::slice::from_ref(inner));
            (format!("{head} AND (resource_type, id) IN ({sub})"), false)
        }
        Predicate::Not(inner) => {
            let (s, negated) = key_set(q, within, types, inner);
            (s, !negated)
        }
    }
}

/// The AND term that drives a search: the one likely to match fewest ([`selectivity`] of its
/// worst OR alternative; the first of equals), if any term can drive at all.
fn driver(filters: &[Vec<Predicate>]) -> Option<usize> {
    filters
        .iter()
        .enumerate()
        .filter(|(_, ors)| !ors.is_empty())
        .filter_map(|(i, ors)| {
            ors.iter()
                .map(selectivity)
                .try_fold(0u8, |worst, r| r.map(|r| worst.max(r)))
                .map(|rank| (rank, i))
        })
        .min()
        .map(|(_, i)| i)
}

/// The condition "this head matches every filter" for a head alias.
///
/// The driving term ([`driver`]) is a set, `(type, id) IN (...)`, that SQLite reads first; every
/// other term is checked per candidate with `EXISTS` on its index table's primary key, so a
/// broad term (a common code, a year of dates) is never built in full only to be intersected
/// with a few rows. A search without a term that can drive (only complements) keeps sets.
fn filter_condition(
    q: &mut Sql,
    alias: &str,
    types: &[String],
    filters: &[Vec<Predicate>],
) -> String {
    let lead = driver(filters);
    let mut parts = Vec::new();
    for (i, ors) in filters.iter().enumerate() {
        let probe = lead.is_some_and(|l| l != i) && ors.iter().all(probes);
        let alts: Vec<String> = ors
            .iter()
            .map(|p| {
                let within = if probe {
                    Scope::Probe(alias)
                } else {
                    Scope::Set(types)
                };
                let (set, negated) = key_set(q, within, types, p);
                let not = if negated { "NOT " } else { "" };
                if probe {
                    format!("{not}EXISTS ({set})")
                } else {
                    format!("({alias}.resource_type, {alias}.id) {not}IN ({set})")
                }
            })
            .collect();
        if alts.is_empty() {
            continue;
        }
        parts.push(balanced(&alts, "OR"));
    }
    if parts.is_empty() {
        "1 = 1".to_string()
    } else {
        balanced(&parts, "AND")
    }
}

/// `items` joined by `op` as a balanced tree of parentheses. SQLite parses `a OR b OR c ...` into
/// a tree as deep as the list is long and refuses one deeper than 1,000; balanced, a search with
/// the most values allowed ([`super::query::MAX_VALUES`]) nests about ten deep.
fn balanced(items: &[String], op: &str) -> String {
    match items {
        [] => String::new(),
        [one] => format!("({one})"),
        _ => {
            let (left, right) = items.split_at(items.len() / 2);
            format!("({} {op} {})", balanced(left, op), balanced(right, op))
        }
    }
}

/// `SELECT resource_type, id` of the live heads of `types` matching `filters`.
fn heads_matching(q: &mut Sql, types: &[String], filters: &[Vec<Predicate>]) -> String {
    q.alias += 1;
    let a = format!("h{}", q.alias);
    let t = q.list(types);
    let cond = filter_condition(q, &a, types, filters);
    format!(
        "SELECT {a}.resource_type, {a}.id FROM resource_head {a} WHERE {a}.deleted = 0 AND {a}.resource_type IN {t} AND {cond}"
    )
}

fn where_clause(q: &mut Sql, plan: &SearchPlan) -> String {
    if plan.contained == Contained::No {
        let t = q.list(&plan.types);
        let cond = filter_condition(q, "h", &plan.types, &plan.filters);
        return format!(
            "FROM resource_head h WHERE h.deleted = 0 AND h.resource_type IN {t} AND {cond}"
        );
    }
    // The contained resources of the types are the owners of their marker rows; a container's
    // key is in its contained resources' markers. Their index rows exist only while the
    // container is live, like every index row. Parts are generated in text order, since
    // SQLite binds `?` by position.
    let mut parts = Vec::new();
    if plan.contained == Contained::Both {
        let t = q.list(&plan.types);
        let cond = filter_condition(q, "h0", &plan.types, &plan.filters);
        parts.push(format!(
            "SELECT h0.resource_type, h0.id FROM resource_head h0 WHERE h0.deleted = 0 \
             AND h0.resource_type IN {t} AND {cond}"
        ));
    }
    let t = q.list(&plan.types);
    let mark = q.text(CONTAINER_MARK);
    let cond = filter_condition(q, "m", &plan.types, &plan.filters);
    let columns = match plan.contained_type {
        ContainedType::Contained => "m.resource_type, m.id",
        ContainedType::Container => "m.system AS resource_type, m.code AS id",
    };
    parts.push(format!(
        "SELECT DISTINCT {columns} FROM idx_token m WHERE m.resource_type IN {t} AND m.param = {mark} AND {cond}"
    ));
    let universe = parts.join(" UNION ");
    format!("FROM ({universe}) h WHERE 1 = 1")
}

/// The value one sort key orders by.
fn key_expr(q: &mut Sql, key: &SortKey) -> String {
    let Some(table) = key.table else {
        return match key.param.as_str() {
            "_lastUpdated" => "h.last_updated_ms".to_string(),
            _ => "h.id".to_string(),
        };
    };
    // Ascending by the smallest value of the resource, descending by the largest.
    let agg = if key.descending { "MAX" } else { "MIN" };
    let col = match table {
        Table::String => "norm",
        Table::Token => "code",
        Table::Reference => "url",
        Table::Date if key.descending => "high",
        Table::Date => "low",
        Table::Number | Table::Quantity => "value",
        Table::Uri => "uri",
    };
    let p = q.text(&key.param);
    format!(
        "(SELECT {agg}(x.{col}) FROM {} x WHERE x.resource_type = h.resource_type AND x.id = h.id AND x.param = {p})",
        table.name()
    )
}

/// The ORDER BY terms of one key, nulls last in either direction (written out, since SQLite and
/// PostgreSQL place NULLs differently by default).
fn sort_expr(q: &mut Sql, key: &SortKey) -> String {
    let dir = if key.descending { "DESC" } else { "ASC" };
    let a = key_expr(q, key);
    let b = key_expr(q, key);
    format!("({a} IS NULL) ASC, {b} {dir}")
}

/// The page of matches: `limit` keys from the plan's cursor on.
pub fn page(plan: &SearchPlan, dialect: &dyn Dialect, limit: usize) -> SqlQuery {
    let mut q = Sql::new(dialect);
    let from = where_clause(&mut q, plan);
    let mut sql = format!("SELECT h.resource_type, h.id {from}");
    let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
    if plan.sort.is_empty() {
        match &plan.cursor {
            Cursor::After(t, id) => {
                let (a, b) = (q.text(t), q.text(id));
                sql.push_str(&format!(
                    " AND (h.resource_type, h.id) > ({a}, {b}) ORDER BY h.resource_type, h.id"
                ));
            }
            Cursor::Before(t, id) => {
                let (a, b) = (q.text(t), q.text(id));
                sql.push_str(&format!(" AND (h.resource_type, h.id) < ({a}, {b}) ORDER BY h.resource_type DESC, h.id DESC"));
            }
            Cursor::Start | Cursor::Offset(_) => sql.push_str(" ORDER BY h.resource_type, h.id"),
        }
        sql.push_str(&format!(" LIMIT {}", q.int(limit_i)));
        if let Cursor::Offset(n) = plan.cursor {
            sql.push_str(&format!(
                " OFFSET {}",
                q.int(i64::try_from(n).unwrap_or(i64::MAX))
            ));
        }
    } else {
        let keys: Vec<String> = plan.sort.iter().map(|k| sort_expr(&mut q, k)).collect();
        sql.push_str(&format!(
            " ORDER BY {}, h.resource_type, h.id",
            keys.join(", ")
        ));
        sql.push_str(&format!(" LIMIT {}", q.int(limit_i)));
        let offset = match plan.cursor {
            Cursor::Offset(n) => n,
            _ => 0,
        };
        sql.push_str(&format!(
            " OFFSET {}",
            q.int(i64::try_from(offset).unwrap_or(i64::MAX))
        ));
    }
    q.text = sql;
    q.finish()
}

/// Whether the keys of `p`'s set are rows of the matching resources themselves (not of the
/// heads, not the targets of other resources' references, not a complement): then, as index
/// rows exist only for live current versions, the set counts its resources without the heads.
fn owned_rows(p: &Predicate) -> bool {
    !matches!(
        p,
        Predicate::Id(_)
            | Predicate::LastUpdated { .. }
            | Predicate::List(_)
            | Predicate::Has { .. }
            | Predicate::Not(_)
            | Predicate::Missing { missing: true, .. }
    )
}

/// `SELECT COUNT(*)` of every match.
///
/// A search of one AND term over its own rows (a code, a reference, a date range, or an OR of
/// them) is counted from the index alone: its distinct keys, less contained resources' keys
/// (the only ones with a `#`; a top-level search never sees them), with no probe of the heads
/// per match.
pub fn count(plan: &SearchPlan, dialect: &dyn Dialect) -> SqlQuery {
    let mut q = Sql::new(dialect);
    if let [ors] = plan.filters.as_slice()
        && plan.contained == Contained::No
        && !ors.is_empty()
        && ors.iter().all(owned_rows)
    {
        let sets: Vec<String> = ors
            .iter()
            .map(|p| key_set(&mut q, Scope::Set(&plan.types), &plan.types, p).0)
            .collect();
        // UNION removes duplicates; a single set needs DISTINCT (a resource may have several
        // rows of one parameter).
        let keys = match sets.as_slice() {
            [one] => format!("SELECT DISTINCT resource_type, id FROM ({one})"),
            _ => sets.join(" UNION "),
        };
        q.text = format!("SELECT COUNT(*) FROM ({keys}) k WHERE instr(k.id, '#') = 0");
        return q.finish();
    }
    let from = where_clause(&mut q, plan);
    q.text = format!("SELECT COUNT(*) {from}");
    q.finish()
}

/// Every match, unpaged (conditional operations).
pub fn all(plan: &SearchPlan, dialect: &dyn Dialect) -> SqlQuery {
    let mut q = Sql::new(dialect);
    let from = where_clause(&mut q, plan);
    q.text = format!("SELECT h.resource_type, h.id {from} ORDER BY h.resource_type, h.id");
    q.finish()
}

/// The targets `(type, id)` of reference parameter `param` (any when `None`) of `source`
/// resources `ids`, optionally only of type `target`.
pub fn include_targets(
    dialect: &dyn Dialect,
    source: &str,
    ids: &[String],
    param: Option<&str>,
    target: Option<&str>,
) -> SqlQuery {
    let mut q = Sql::new(dialect);
    let s = q.text(source);
    let list = q.list(ids);
    let mut sql = format!(
        "SELECT DISTINCT target_type, target_id FROM idx_reference WHERE resource_type = {s} AND id IN {list} AND target_id <> ''"
    );
    if let Some(p) = param {
        sql.push_str(&format!(" AND param = {}", q.text(p)));
    }
    if let Some(t) = target {
        sql.push_str(&format!(" AND target_type = {}", q.text(t)));
    }
    sql.push_str(" ORDER BY target_type, target_id");
    q.text = sql;
    q.finish()
}

/// The next `limit` live resources of `resource_type` after id `after`, in id order (`$reindex`
/// walks a type with it).
pub fn live_keys(
    dialect: &dyn Dialect,
    resource_type: &str,
    after: Option<&str>,
    limit: usize,
) -> SqlQuery {
    let mut q = Sql::new(dialect);
    let t = q.text(resource_type);
    let a = q.text(after.unwrap_or(""));
    let n = q.int(i64::try_from(limit).unwrap_or(i64::MAX));
    q.text = format!(
        "SELECT resource_type, id FROM resource_head WHERE resource_type = {t} AND deleted = 0 \
         AND id > {a} ORDER BY id LIMIT {n}"
    );
    q.finish()
}

/// Every resource (type, id) whose indexed references point at `target_type/target_id`.
pub fn referrers(dialect: &dyn Dialect, target_type: &str, target_id: &str) -> SqlQuery {
    let mut q = Sql::new(dialect);
    let (t, i) = (q.text(target_type), q.text(target_id));
    q.text = format!(
        "SELECT DISTINCT resource_type, id FROM idx_reference \
         WHERE target_type = {t} AND target_id = {i} ORDER BY resource_type, id"
    );
    q.finish()
}

/// The `source` resources referring by `param` (any when `None`) to one of `targets`.
pub fn revinclude_sources(
    dialect: &dyn Dialect,
    source: &str,
    param: Option<&str>,
    targets: &[(String, String)],
) -> SqlQuery {
    let mut q = Sql::new(dialect);
    let s = q.text(source);
    let pairs: Vec<String> = targets
        .iter()
        .map(|(t, i)| {
            let (a, b) = (q.text(t), q.text(i));
            format!("({a}, {b})")
        })
        .collect();
    let mut sql = format!(
        "SELECT DISTINCT resource_type, id FROM idx_reference \
         WHERE resource_type = {s} AND (target_type, target_id) IN (VALUES {})",
        if pairs.is_empty() {
            "(NULL, NULL)".to_string()
        } else {
            pairs.join(", ")
        }
    );
    if let Some(p) = param {
        sql.push_str(&format!(" AND param = {}", q.text(p)));
    }
    sql.push_str(" ORDER BY resource_type, id");
    q.text = sql;
    q.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_differ_only_in_placeholders() {
        let mut plan = SearchPlan::over(vec!["Patient".into()], 10);
        plan.filters = vec![vec![Predicate::Token {
            param: "gender".into(),
            system: None,
            code: Some("male".into()),
        }]];
        let a = page(&plan, &Sqlite, 11);
        let b = page(&plan, &Postgres, 11);
        assert_eq!(a.args, b.args);
        assert!(b.sql.contains("$4"));
        assert_eq!(a.sql.replace('?', ""), {
            let mut s = b.sql.clone();
            for i in (1..=a.args.len()).rev() {
                s = s.replace(&format!("${i}"), "");
            }
            s
        });
    }
}
