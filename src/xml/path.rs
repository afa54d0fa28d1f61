//! The XPath-like paths of the mapping files: `a/b[@root='2.16.156.10011.1.3']/c`, `*` for any
//! element, `//name` for a descendant at any depth, and a final `@attr`. Element names are matched
//! in the HL7 namespace (or none); paths are parsed once when the mapping files load.

use super::{attr, is};
use roxmltree::Node;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    /// `None` for `*`.
    name: Option<String>,
    /// Any depth below the context (`//name`).
    descendant: bool,
    /// `[@a='v']` (value `Some`) or `[@a]` (value `None`).
    predicates: Vec<(String, Option<String>)>,
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XPath {
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

fn parse_step(s: &str, descendant: bool) -> Result<Step, String> {
    let (name, mut rest) = match s.find('[') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    if name.is_empty()
        || !(name == "*"
            || name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!("'{s}' is not an element step"));
    }
    let mut predicates = Vec::new();
    while !rest.is_empty() {
        let end = rest.find(']').ok_or_else(|| format!("'{s}': unclosed ["))?;
        let inner = rest[1..end].trim();
        let inner = inner
            .strip_prefix('@')
            .ok_or_else(|| format!("'{s}': a predicate must be [@attr] or [@attr='value']"))?;
        match inner.split_once('=') {
            Some((a, v)) => {
                let v = v.trim();
                let v = v
                    .strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
                    .ok_or_else(|| format!("'{s}': the value must be in single quotes"))?;
                predicates.push((a.trim().to_string(), Some(v.to_string())));
            }
            None => predicates.push((inner.to_string(), None)),
        }
        rest = &rest[end + 1..];
    }
    Ok(Step {
        name: (name != "*").then(|| name.to_string()),
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
        if t != "." && !t.is_empty() {
            let mut descendant = false;
            let parts: Vec<&str> = t.split('/').collect();
            for (i, p) in parts.iter().enumerate() {
                if p.is_empty() {
                    if i == 0 || descendant {
                        return Err(format!("'{text}': an empty step"));
                    }
                    descendant = true;
                    continue;
                }
                if let Some(a) = p.strip_prefix('@') {
                    if i + 1 != parts.len() || a.is_empty() {
                        return Err(format!("'{text}': @attr must be the last step"));
                    }
                    attribute = Some(a.to_string());
                    continue;
                }
                if *p == "." {
                    continue;
                }
                if *p == ".." {
                    steps.push(Step {
                        name: Some("..".into()),
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
            steps,
            attribute,
            text: t.to_string(),
        })
    }

    /// True when the path ends in `@attr`.
    pub fn is_attribute(&self) -> bool {
        self.attribute.is_some()
    }

    /// The elements the path's steps select under `ctx` (document order; an attribute step is
    /// not applied).
    pub fn nodes<'a, 'i>(&self, ctx: Node<'a, 'i>) -> Vec<Node<'a, 'i>> {
        let mut cur = vec![ctx];
        for step in &self.steps {
            let mut next = Vec::new();
            for n in &cur {
                if step.name.as_deref() == Some("..") {
                    next.extend(n.parent().filter(|p| p.is_element()));
                } else if step.descendant {
                    next.extend(n.descendants().skip(1).filter(|c| matches(step, *c)));
                } else {
                    next.extend(n.children().filter(|c| matches(step, *c)));
                }
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

fn matches(step: &Step, n: Node<'_, '_>) -> bool {
    let named = match &step.name {
        Some(name) => is(n, name),
        None => n.is_element(),
    };
    named
        && step.predicates.iter().all(|(a, v)| match v {
            Some(v) => attr(n, a) == Some(v.as_str()),
            None => attr(n, a).is_some(),
        })
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
        assert!(XPath::parse("a/@x/b").is_err());
        assert!(XPath::parse("a[root='1']").is_err());
    }
}
