//! What a search asks for, after parsing: [`SearchPlan`] and its predicates. Produced by
//! `query::parse`, consumed by `sql` (matching) and the REST layer (paging, includes, views).

/// A date/number/quantity comparison prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    /// Splits a value's two-letter prefix off (`ge2020` -> `Ge`, `2020`); no prefix is `eq`.
    pub fn split(value: &str) -> (Prefix, &str) {
        let p = match value.get(..2) {
            Some("eq") => Prefix::Eq,
            Some("ne") => Prefix::Ne,
            Some("gt") => Prefix::Gt,
            Some("lt") => Prefix::Lt,
            Some("ge") => Prefix::Ge,
            Some("le") => Prefix::Le,
            Some("sa") => Prefix::Sa,
            Some("eb") => Prefix::Eb,
            Some("ap") => Prefix::Ap,
            _ => return (Prefix::Eq, value),
        };
        (p, &value[2..])
    }
}

/// A searched quantity in canonical UCUM units (`search::units::of_search`): the value, the
/// bounds `[low, high)` its precision implies, scaled alike, and the canonical unit.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonicalQuantity {
    pub value: f64,
    pub low: f64,
    pub high: f64,
    pub code: String,
}

/// How a string value matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMatch {
    /// Normalised starts-with (the default).
    Prefix,
    /// Exact, case- and accent-sensitive.
    Exact,
    /// Normalised substring.
    Contains,
}

/// How a uri value matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMatch {
    Exact,
    /// The stored uri starts with the value.
    Below,
    /// The value starts with the stored uri.
    Above,
}

/// Which index table a parameter type lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    String,
    Token,
    Reference,
    Date,
    Number,
    Quantity,
    Uri,
}

impl Table {
    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Table::String => "idx_string",
            Table::Token => "idx_token",
            Table::Reference => "idx_reference",
            Table::Date => "idx_date",
            Table::Number => "idx_number",
            Table::Quantity => "idx_quantity",
            Table::Uri => "idx_uri",
        }
    }
}

/// One matching condition on resources of the scope's types. A parameter occurrence is a list of
/// them joined by OR (its comma-separated values); the occurrences are joined by AND.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `_id`.
    Id(String),
    /// `_lastUpdated`, as an instant range with its prefix.
    LastUpdated { prefix: Prefix, low: i64, high: i64 },
    /// `:missing`: whether the parameter has any index row.
    Missing {
        table: Table,
        param: String,
        missing: bool,
    },
    String {
        param: String,
        how: StringMatch,
        value: String,
    },
    /// `system|code`; `system: Some("")` is "no system", `None` any; `code: None` is `system|`.
    Token {
        param: String,
        system: Option<String>,
        code: Option<String>,
    },
    /// One of a set of `(system, code)` pairs: `:in` (a value set's expansion), `:below` and
    /// `:above` (a code with its descendants or ancestors); `:not-in` is its [`Predicate::Not`].
    /// Sorted, without duplicates.
    TokenIn {
        param: String,
        codes: Vec<(String, String)>,
    },
    /// `:text` (normalised substring of display/text).
    TokenText { param: String, text: String },
    /// `_text` / `_content` (`param`): the searchable text contains every one of `terms` (see
    /// `fulltext::term`: a leading space anchors a term at a word start).
    Text { param: String, terms: Vec<String> },
    /// `_list`: the resource is an entry (`List.entry.item`) of the List with this id.
    List(String),
    /// Date range comparison; `margin` widens the search range for `ap`.
    Date {
        param: String,
        prefix: Prefix,
        low: i64,
        high: i64,
        margin: i64,
    },
    /// Several date comparisons (the ANDed values of one parameter) that one index row must
    /// satisfy together. Only for a parameter of which a resource has at most one row
    /// (`ParamSpec::one_row`): there it means the same as the AND of each comparison on its own,
    /// and is one range scan of the index instead of several sets intersected.
    DateAll {
        param: String,
        bounds: Vec<DateBound>,
    },
    /// Number comparison against `value`, with `[low, high)` the range its precision implies.
    Number {
        param: String,
        prefix: Prefix,
        value: f64,
        low: f64,
        high: f64,
    },
    Quantity {
        param: String,
        prefix: Prefix,
        value: f64,
        low: f64,
        high: f64,
        system: Option<String>,
        code: Option<String>,
        /// The same in canonical UCUM units, when the search names a UCUM unit: then that is
        /// what is compared.
        canonical: Option<CanonicalQuantity>,
    },
    /// A reference to `Type/id` (type optional) or to a URL as written.
    Reference {
        param: String,
        target_type: Option<String>,
        id: Option<String>,
        url: Option<String>,
    },
    Uri {
        param: String,
        how: UriMatch,
        value: String,
    },
    /// Chained: a reference (to one of `targets`) whose target matches any of `inner`.
    Chain {
        param: String,
        targets: Vec<String>,
        inner: Vec<Predicate>,
    },
    /// `_has`: some `source` resource referring here by `param` matches any of `inner`.
    Has {
        source: String,
        param: String,
        inner: Vec<Predicate>,
    },
    /// Negation (`:not`).
    Not(Box<Predicate>),
}

/// One comparison of a [`Predicate::DateAll`]: what a [`Predicate::Date`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateBound {
    pub prefix: Prefix,
    pub low: i64,
    pub high: i64,
    pub margin: i64,
}

/// One `_sort` key.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// `_id`, `_lastUpdated`, or a parameter code.
    pub param: String,
    /// Index table for a parameter (`None` for `_id`/`_lastUpdated`).
    pub table: Option<Table>,
    pub descending: bool,
}

/// `_include` / `_revinclude`.
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    /// The type holding the reference.
    pub source: String,
    /// The reference parameter; `None` for `*`.
    pub param: Option<String>,
    /// Only targets of this type.
    pub target: Option<String>,
    pub iterate: bool,
}

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    True,
    Text,
    Data,
    Count,
    False,
}

/// `_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    None,
    Estimate,
    Accurate,
}

/// `_contained`: which resources a search looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contained {
    /// Top-level resources only (`false`, the default).
    No,
    /// Contained resources only (`true`).
    Only,
    /// Both (`both`).
    Both,
}

/// `_containedType`: what a match inside a container returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainedType {
    /// The container resource (the default).
    Container,
    /// The contained resource alone, with the fullUrl `[base]/Container/id#contained-id`.
    Contained,
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// The first page.
    Start,
    /// Keyset: strictly after this (type, id) in (type, id) order.
    After(String, String),
    /// Keyset backwards: the page ending just before this (type, id).
    Before(String, String),
    /// Offset (used with `_sort`).
    Offset(usize),
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPlan {
    /// The types searched (one for type search, several for system search).
    pub types: Vec<String>,
    /// AND of ORs.
    pub filters: Vec<Vec<Predicate>>,
    pub sort: Vec<SortKey>,
    pub count: usize,
    pub cursor: Cursor,
    pub include: Vec<Include>,
    pub revinclude: Vec<Include>,
    pub summary: Option<Summary>,
    pub elements: Option<Vec<String>>,
    pub total: Total,
    pub contained: Contained,
    pub contained_type: ContainedType,
    /// The parameters applied, in order, as (name, value): what `Bundle.link[self]` shows.
    pub applied: Vec<(String, String)>,
    /// Parameters ignored under `Prefer: handling=lenient`, with the reason.
    pub ignored: Vec<String>,
}

impl SearchPlan {
    /// Everything of `types`, `count` per page, in the default order, with no views.
    pub fn over(types: Vec<String>, count: usize) -> SearchPlan {
        SearchPlan {
            types,
            filters: vec![],
            sort: vec![],
            count,
            cursor: Cursor::Start,
            include: vec![],
            revinclude: vec![],
            summary: None,
            elements: None,
            total: Total::Accurate,
            contained: Contained::No,
            contained_type: ContainedType::Container,
            applied: vec![],
            ignored: vec![],
        }
    }
}
