//! The XPath-like paths of the mapping files and of the conformance runner's XML asserts: a small
//! subset, parsed once, evaluated over a [`roxmltree`] tree without any extension point (no
//! functions beyond `count()`, no variables, no document loading), so a path from a TestScript
//! cannot reach anything but the tree it is given.
//!
//! - steps `a/b/c`, `*` for any element, `..`, `.`; `//name` for a descendant at any depth;
//! - a leading `/` starts at the document (`/MCCI_IN000002UV01/id`), else at the context node;
//! - element names are matched in the HL7 namespace (or none); a prefix names another namespace
//!   (`soap:Envelope` is either SOAP envelope namespace, `fhir:` is FHIR's; see [`PREFIXES`]);
//! - predicates `[@a='v']`, `[@a!='v']`, `[@a]`, `[2]` (1-based position among the step's
//!   matches under one parent), `[rel/path]` (exists) and `[rel/path/@a='v']` (some value equals);
//! - a final `@attr` or `text()`; [`Query`] adds `count(path)`.

use super::{HL7_NS, attr, is};
use roxmltree::Node;

/// Namespace prefixes a path may use (a step without a prefix is HL7 v3's, or in no namespace).
pub const PREFIXES: [(&str, &[&str]); 5] = [
    ("hl7", &[HL7_NS]),
    ("v3", &[HL7_NS]),
    (
        "soap",
        &[
            "http://schemas.xmlsoap.org/soap/envelope/",
            "http://www.w3.org/2003/05/soap-envelope",
        ],
    ),
    ("xsi", &[super::XSI_NS]),
    ("fhir", &["http://hl7.org/fhir"]),
];

/// What a predicate tests on a candidate element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Predicate {
    /// `[@a]`.
    HasAttribute(String),
    /// `[@a='v']` (`equal`) or `[@a!='v']`.
    Attribute {
        name: String,
        value: String,
        equal: bool,
    },
    /// `[n]`, 1-based.
    Position(usize),
    /// `[rel/path]` (value `None`: selects something) or `[rel/path='v']`.
    Path(Box<XPath>, Option<String>),
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    /// `None` for `*`; `..` for the parent.
    name: Option<String>,
    /// Namespaces the element may be in (`None`: HL7 v3 or none).
    namespaces: Option<&'static [&'static str]>,
    /// Any depth below the context (`//name`).
    descendant: bool,
    predicates: Vec<Predicate>,
}

impl Step {
    fn has_position(&self) -> bool {
        self.predicates
            .iter()
            .any(|p| matches!(p, Predicate::Position(_)))
    }
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XPath {
    /// Starts at the document, not the context node.
    absolute: bool,
    steps: Vec<Step>,
    /// A final `@attr`.
    attribute: Option<String>,
    text: String,
}

impl std::fmt::Display for XPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits `s` at `sep` where it is outside brackets and quotes.
fn split_outside(s: &str, sep: char) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0usize, None::<char>, 0);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("'{s}': ']' without '['"))?;
            }
            (None, c) if c == sep && depth == 0 => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quote.is_some() {
        return Err(format!("'{s}': an unclosed quote"));
    }
    if depth != 0 {
        return Err(format!("'{s}': unclosed ["));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// `'v'` or `"v"` without its quotes.
fn quoted(v: &str, whole: &str) -> Result<String, String> {
    let v = v.trim();
    ['\'', '"']
        .iter()
        .find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
        .map(str::to_string)
        .ok_or_else(|| format!("'{whole}': the value must be quoted ('v')"))
}

/// The `[...]` groups after a step's name, each without its brackets.
fn bracket_groups<'s>(rest: &'s str, whole: &str) -> Result<Vec<&'s str>, String> {
    let mut out = Vec::new();
    let mut quote = None::<char>;
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => {
                if depth == 0 {
                    start = i + 1;
                }
                depth += 1;
            }
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    out.push(&rest[start..i]);
                }
            }
            (None, c) if depth == 0 && !c.is_whitespace() => {
                return Err(format!("'{whole}': '{c}' after a predicate"));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn parse_predicate(inner: &str, whole: &str) -> Result<Predicate, String> {
    let inner = inner.trim();
    if !inner.is_empty() && inner.chars().all(|c| c.is_ascii_digit()) {
        let n: usize = inner
            .parse()
            .map_err(|_| format!("'{whole}': position {inner} is too large"))?;
        if n == 0 {
            return Err(format!("'{whole}': positions start at 1"));
        }
        return Ok(Predicate::Position(n));
    }
    // `a!='v'` before `a='v'`: the `=` of `!=` must not split the name.
    let (lhs, value, equal) = match split_outside(inner, '=')?.as_slice() {
        [lhs] => (*lhs, None, true),
        [lhs, v] => match lhs.strip_suffix('!') {
            Some(l) => (l, Some(quoted(v, whole)?), false),
            None => (*lhs, Some(quoted(v, whole)?), true),
        },
        _ => return Err(format!("'{whole}': more than one '=' in a predicate")),
    };
    let lhs = lhs.trim();
    if let Some(a) = lhs.strip_prefix('@') {
        if a.is_empty() || !a.chars().all(name_char) {
            return Err(format!("'{whole}': '@{a}' is not an attribute name"));
        }
        return Ok(match value {
            None => Predicate::HasAttribute(a.to_string()),
            Some(value) => Predicate::Attribute {
                name: a.to_string(),
                value,
                equal,
            },
        });
    }
    if !equal {
        return Err(format!("'{whole}': '!=' applies to an attribute (@a!='v')"));
    }
    let path = XPath::parse(lhs)?;
    if path.absolute {
        return Err(format!(
            "'{whole}': a predicate path is relative to its step"
        ));
    }
    Ok(Predicate::Path(Box::new(path), value))
}

fn name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn parse_step(s: &str, descendant: bool) -> Result<Step, String> {
    let (name, rest) = match s.find('[') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let (prefix, local) = match name.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, name),
    };
    if local.is_empty() || !(local == "*" || local.chars().all(name_char)) {
        return Err(format!("'{s}' is not an element step"));
    }
    let namespaces = match prefix {
        None => None,
        Some(p) => Some(
            PREFIXES
                .iter()
                .find(|(k, _)| *k == p)
                .map(|(_, ns)| *ns)
                .ok_or_else(|| {
                    format!(
                        "'{s}': unknown namespace prefix '{p}' (known: {})",
                        PREFIXES.map(|(k, _)| k).join(", ")
                    )
                })?,
        ),
    };
    let predicates = bracket_groups(rest, s)?
        .into_iter()
        .map(|inner| parse_predicate(inner, s))
        .collect::<Result<_, _>>()?;
    Ok(Step {
        name: (local != "*").then(|| local.to_string()),
        namespaces,
        descendant,
        predicates,
    })
}

impl XPath {
    /// Parses a path; `.` is the context node itself.
    pub fn parse(text: &str) -> Result<XPath, String> {
        let t = text.trim();
        let mut steps = Vec::new();
        let mut attribute = None;
        let absolute = t.starts_with('/');
        let body = t.strip_prefix('/').unwrap_or(t);
        if body.is_empty() && absolute {
            return Err(format!("'{text}' names no element"));
        }
        if t != "." && !t.is_empty() {
            // `//x` at the start: the leading `/` is gone, the empty part marks the descendant.
            let mut descendant = absolute && body.starts_with('/');
            let body = if descendant { &body[1..] } else { body };
            let parts = split_outside(body, '/')?;
            for (i, p) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                if p.is_empty() {
                    if i == 0 || descendant || last {
                        return Err(format!("'{text}': an empty step"));
                    }
                    descendant = true;
                    continue;
                }
                if let Some(a) = p.strip_prefix('@') {
                    if !last || a.is_empty() {
                        return Err(format!("'{text}': @attr must be the last step"));
                    }
                    attribute = Some(a.to_string());
                    continue;
                }
                if *p == "text()" {
                    if !last {
                        return Err(format!("'{text}': text() must be the last step"));
                    }
                    continue;
                }
                if *p == "." {
                    continue;
                }
                if *p == ".." {
                    steps.push(Step {
                        name: Some("..".into()),
                        namespaces: None,
                        descendant: false,
                        predicates: Vec::new(),
                    });
                    continue;
                }
                steps.push(parse_step(p, descendant)?);
                descendant = false;
            }
        }
        Ok(XPath {
            absolute,
            steps,
            attribute,
            text: t.to_string(),
        })
    }

    /// True when the path ends in `@attr`.
    pub fn is_attribute(&self) -> bool {
        self.attribute.is_some()
    }

    /// The final `@attr` of an element the path's steps already selected (what [`Self::values`]
    /// gives for that one element; calling `values` on it would apply the steps again).
    pub fn attribute_of(&self, selected: Node<'_, '_>) -> Option<String> {
        self.attribute
            .as_deref()
            .and_then(|a| attr(selected, a))
            .map(str::to_string)
    }

    /// The elements the path's steps select under `ctx` (document order; an attribute step is
    /// not applied).
    pub fn nodes<'a, 'i>(&self, ctx: Node<'a, 'i>) -> Vec<Node<'a, 'i>> {
        let start = if self.absolute {
            ctx.document().root()
        } else {
            ctx
        };
        let mut cur = vec![start];
        for step in &self.steps {
            let mut next: Vec<Node<'a, 'i>> = Vec::new();
            for n in &cur {
                if step.name.as_deref() == Some("..") {
                    next.extend(n.parent().filter(|p| p.is_element()));
                    continue;
                }
                if step.descendant && !step.has_position() {
                    next.extend(n.descendants().skip(1).filter(|c| matches(step, *c)));
                } else if step.descendant {
                    // Positions count among siblings: group the matches by their parent.
                    let mut index: std::collections::HashMap<roxmltree::NodeId, usize> =
                        std::collections::HashMap::new();
                    let mut groups: Vec<Vec<Node<'a, 'i>>> = Vec::new();
                    for c in n.descendants().skip(1).filter(|c| matches(step, *c)) {
                        let parent = c.parent().map_or(c.id(), |p| p.id());
                        let i = *index.entry(parent).or_insert_with(|| {
                            groups.push(Vec::new());
                            groups.len() - 1
                        });
                        groups[i].push(c);
                    }
                    for g in groups {
                        next.extend(select(step, g));
                    }
                } else {
                    next.extend(select(
                        step,
                        n.children().filter(|c| matches(step, *c)).collect(),
                    ));
                }
            }
            // `//a` from two nested contexts can reach one node twice.
            next.dedup_by(|a, b| a.id() == b.id());
            if step.descendant {
                next.sort_by_key(|n| n.range().start);
                next.dedup_by(|a, b| a.id() == b.id());
            }
            cur = next;
            if cur.is_empty() {
                break;
            }
        }
        cur
    }

    /// The first selected element.
    pub fn first<'a, 'i>(&self, ctx: Node<'a, 'i>) -> Option<Node<'a, 'i>> {
        self.nodes(ctx).into_iter().next()
    }

    /// The string values: the attribute of each selected element, or its text.
    pub fn values(&self, ctx: Node<'_, '_>) -> Vec<String> {
        self.nodes(ctx)
            .into_iter()
            .filter_map(|n| match &self.attribute {
                Some(a) => attr(n, a).map(str::to_string),
                None => super::text(n),
            })
            .collect()
    }

    /// The first string value.
    pub fn value(&self, ctx: Node<'_, '_>) -> Option<String> {
        self.values(ctx).into_iter().next()
    }
}

/// Applies the step's predicates, in order, to the matches under one parent (a position counts
/// among what the predicates before it kept, as in XPath).
fn select<'a, 'i>(step: &Step, mut candidates: Vec<Node<'a, 'i>>) -> Vec<Node<'a, 'i>> {
    for p in &step.predicates {
        candidates = match p {
            Predicate::Position(n) => candidates.get(n - 1).copied().into_iter().collect(),
            _ => candidates.into_iter().filter(|c| holds(p, *c)).collect(),
        };
    }
    candidates
}

fn holds(p: &Predicate, n: Node<'_, '_>) -> bool {
    match p {
        Predicate::HasAttribute(a) => n.attribute(a.as_str()).is_some(),
        Predicate::Attribute { name, value, equal } => {
            (attr(n, name) == Some(value.as_str())) == *equal
        }
        Predicate::Position(_) => true,
        Predicate::Path(path, None) => match &path.attribute {
            Some(_) => !path.values(n).is_empty(),
            None => !path.nodes(n).is_empty(),
        },
        Predicate::Path(path, Some(v)) => path.values(n).iter().any(|x| x == v),
    }
}

fn matches(step: &Step, n: Node<'_, '_>) -> bool {
    if !n.is_element() {
        return false;
    }
    let named = match (&step.name, step.namespaces) {
        (Some(name), None) => is(n, name),
        (None, None) => true,
        (name, Some(ns)) => {
            name.as_deref().is_none_or(|nm| n.tag_name().name() == nm)
                && n.tag_name().namespace().is_some_and(|x| ns.contains(&x))
        }
    };
    // Positions are applied over the set by `select`, not per node.
    named
        && step
            .predicates
            .iter()
            .take_while(|p| !matches!(p, Predicate::Position(_)))
            .all(|p| holds(p, n))
}

/// A path or `count(path)`: what an XML assert of the conformance runner reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Values(XPath),
    Count(XPath),
}

impl Query {
    /// Parses `path` or `count(path)`.
    pub fn parse(text: &str) -> Result<Query, String> {
        let t = text.trim();
        if let Some(inner) = t.strip_prefix("count(").and_then(|r| r.strip_suffix(')')) {
            return Ok(Query::Count(XPath::parse(inner)?));
        }
        if t.contains('(') && !t.contains("text()") && !t.contains('\'') {
            return Err(format!(
                "'{t}': the only function is count(path) (and a final text())"
            ));
        }
        Ok(Query::Values(XPath::parse(t)?))
    }

    /// The values (`count()`: one, the number of elements, or of values when the path ends in
    /// `@attr`) with `ctx` as the context node.
    pub fn strings(&self, ctx: Node<'_, '_>) -> Vec<String> {
        match self {
            Query::Values(p) => p.values(ctx),
            Query::Count(p) => {
                let n = if p.is_attribute() {
                    p.values(ctx).len()
                } else {
                    p.nodes(ctx).len()
                };
                vec![n.to_string()]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_select_by_name_predicate_and_depth() {
        let xml = r#"<r xmlns="urn:hl7-org:v3"><a><id root="1" extension="x"/><id root="2" extension="y"/></a><b><c><id root="2" extension="z"/></c></b></r>"#;
        let doc = roxmltree::Document::parse(xml).unwrap();
        let r = doc.root_element();
        let p = XPath::parse("a/id[@root='2']/@extension").unwrap();
        assert_eq!(p.values(r), vec!["y"]);
        let p = XPath::parse(".//id/@extension").unwrap();
        assert_eq!(p.values(r), vec!["x", "y", "z"]);
        let p = XPath::parse("*/c/id").unwrap();
        assert_eq!(p.nodes(r).len(), 1);
        assert_eq!(XPath::parse(".").unwrap().nodes(r).len(), 1);
        let p = XPath::parse("b/c/../../a/id/@root").unwrap();
        assert_eq!(p.values(r), vec!["1", "2"]);
        // The attribute of each element the steps selected, as the mapping filler reads it.
        let p = XPath::parse("a/id/@extension").unwrap();
        let got: Vec<_> = p
            .nodes(r)
            .into_iter()
            .filter_map(|n| p.attribute_of(n))
            .collect();
        assert_eq!(got, vec!["x", "y"]);
        assert!(XPath::parse("a/@x/b").is_err());
        assert!(XPath::parse("a[root=1]").is_err());
    }

    const SOAP: &str = r#"<?xml version="1.0"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>
<MCCI_IN000002UV01 xmlns="urn:hl7-org:v3">
  <id root="2.16.156.10011.2.5.1.1" extension="A-1"/>
  <acknowledgement typeCode="AA"><targetMessage><id extension="M-1"/></targetMessage>
    <acknowledgementDetail typeCode="I"><text value="ok"/></acknowledgementDetail>
    <acknowledgementDetail typeCode="W"><text value="note"/></acknowledgementDetail>
  </acknowledgement>
  <controlActProcess><subject><e><id><item root="1" extension="p"/></id><name>张三</name></e></subject>
    <subject><e><id><item root="2" extension="q"/></id><name>李四</name></e></subject></controlActProcess>
</MCCI_IN000002UV01></s:Body></s:Envelope>"#;

    fn strings(path: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(SOAP).unwrap();
        Query::parse(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .strings(doc.root_element())
    }

    #[test]
    fn absolute_prefixed_and_descendant_paths() {
        assert_eq!(
            strings("/soap:Envelope/soap:Body/MCCI_IN000002UV01/acknowledgement/@typeCode"),
            vec!["AA"]
        );
        // Without the prefix the SOAP elements are not HL7's: nothing is selected.
        assert!(strings("/Envelope/Body/MCCI_IN000002UV01/id/@extension").is_empty());
        assert_eq!(strings("//targetMessage/id/@extension"), vec!["M-1"]);
        assert_eq!(strings("//hl7:targetMessage/id/@extension"), vec!["M-1"]);
        assert_eq!(strings("/soap:*/soap:Body/*/id/@extension"), vec!["A-1"]);
        // Relative to the context node (the root element).
        assert_eq!(
            strings("soap:Body/*/id/@root"),
            vec!["2.16.156.10011.2.5.1.1"]
        );
        assert_eq!(strings("//e/name/text()"), vec!["张三", "李四"]);
    }

    #[test]
    fn predicates_and_count() {
        assert_eq!(
            strings("//acknowledgementDetail[@typeCode='W']/text/@value"),
            vec!["note"]
        );
        assert_eq!(
            strings("//acknowledgementDetail[@typeCode!='W']/text/@value"),
            vec!["ok"]
        );
        assert_eq!(strings("//acknowledgementDetail[2]/@typeCode"), vec!["W"]);
        assert_eq!(strings("//subject[2]/e/name"), vec!["李四"]);
        assert_eq!(strings("//e[id/item/@extension='q']/name"), vec!["李四"]);
        assert_eq!(strings("//e[id/item[@root='1']]/name"), vec!["张三"]);
        assert_eq!(strings("count(//subject)"), vec!["2"]);
        assert_eq!(strings("count(//subject/e[name='张三'])"), vec!["1"]);
        assert_eq!(strings("count(//item/@extension)"), vec!["2"]);
        assert_eq!(strings("count(//id/@extension)"), vec!["2"]);
        assert_eq!(strings("count(//nothing)"), vec!["0"]);
        // A value in quotes may hold `/`, `]` and `=`.
        assert_eq!(strings("count(//e[name='a/b]=c'])"), vec!["0"]);
    }

    #[test]
    fn bad_paths_are_refused_with_the_reason() {
        for (p, why) in [
            ("count(//a", "the only function is count"),
            ("string(//a)", "the only function is count"),
            ("//x:a", "unknown namespace prefix 'x'"),
            ("a[0]", "positions start at 1"),
            ("a[@b='c'", "unclosed ["),
            ("a[@b='c]", "unclosed quote"),
            ("a/text()/b", "text() must be the last step"),
            ("a[b!='c']", "'!=' applies to an attribute"),
            ("a[/b]", "relative to its step"),
            ("/", "names no element"),
            ("a//", "an empty step"),
        ] {
            let e = Query::parse(p).unwrap_err();
            assert!(e.contains(why), "{p}: {e}");
        }
    }
}
