//! Segment groups: a message structure's grammar (`ORU_R01`, `ADT_A01`...) and the placement of
//! each segment of a message in it.
//!
//! Grammars are data (the `grammar` key of `mappings/hl7v2/messages/*.toml`), written as in the
//! standard's abstract message syntax: `[ ]` optional, `{ }` repeating, `NAME:` names a group:
//! `MSH {PATIENT_RESULT: [PATIENT: PID [{NTE}]] {ORDER_OBSERVATION: [ORC] OBR [{OBSERVATION: OBX}]}}`.
//! Matching is greedy and never fails: a Z-segment, or a segment the grammar does not know, stays
//! in the group where it appears; a known segment out of order is placed where the grammar next
//! allows it, so a sender's small deviations do not lose data.

use std::collections::HashSet;

/// One element of a grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub optional: bool,
    pub repeating: bool,
}

/// A segment or a group of elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Segment(String),
    /// A named group (anonymous groups have an empty name).
    Group(String, Vec<Node>),
}

/// A parsed grammar.
#[derive(Debug, Clone)]
pub struct Grammar {
    root: Vec<Node>,
    known: HashSet<String>,
}

/// Where one segment sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// 0-based index of the segment in the message.
    pub segment: usize,
    /// Group names and the segment id, dot-separated: `PATIENT_RESULT.ORDER_OBSERVATION.OBR`.
    pub path: String,
    /// Instance numbers of the enclosing groups, outermost first: two segments share a group
    /// instance exactly when their chains share that prefix.
    pub chain: Vec<u32>,
    /// True when the grammar did not expect this segment here.
    pub unexpected: bool,
}

impl Grammar {
    /// Parses the abstract syntax.
    pub fn parse(text: &str) -> Result<Grammar, String> {
        let tokens = tokenize(text)?;
        let mut pos = 0;
        let root = parse_seq(&tokens, &mut pos, None)?;
        if pos != tokens.len() {
            return Err(format!("unexpected '{}'", tokens[pos]));
        }
        let mut known = HashSet::new();
        collect(&root, &mut known);
        Ok(Grammar { root, known })
    }

    /// A grammar that only knows MSH: every segment is placed at the top level.
    pub fn flat() -> Grammar {
        Grammar {
            root: vec![],
            known: HashSet::new(),
        }
    }

    /// Places every segment id of a message (in order).
    pub fn place(&self, ids: &[&str]) -> Vec<Placement> {
        let mut m = Matcher {
            ids,
            pos: 0,
            next_instance: 1,
            out: Vec::with_capacity(ids.len()),
            known: &self.known,
        };
        m.seq(&self.root, "", &[0], true);
        m.out
    }
}

fn collect(nodes: &[Node], known: &mut HashSet<String>) {
    for n in nodes {
        match &n.kind {
            NodeKind::Segment(s) => {
                known.insert(s.clone());
            }
            NodeKind::Group(_, c) => collect(c, known),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        match c {
            '[' | ']' | '{' | '}' | ':' => out.push(c.to_string()),
            c if c.is_whitespace() => {}
            c => return Err(format!("'{c}' is not part of the grammar syntax")),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    Ok(out)
}

fn parse_seq(t: &[String], pos: &mut usize, close: Option<&str>) -> Result<Vec<Node>, String> {
    let mut nodes = Vec::new();
    while *pos < t.len() {
        let tok = t[*pos].as_str();
        if Some(tok) == close {
            return Ok(nodes);
        }
        *pos += 1;
        let node = match tok {
            "[" | "{" => {
                let closing = if tok == "[" { "]" } else { "}" };
                let name = if t.get(*pos + 1).map(String::as_str) == Some(":") {
                    let n = t[*pos].clone();
                    *pos += 2;
                    Some(n)
                } else {
                    None
                };
                let inner = parse_seq(t, pos, Some(closing))?;
                if t.get(*pos).map(String::as_str) != Some(closing) {
                    return Err(format!("missing '{closing}'"));
                }
                *pos += 1;
                let mut node = match (name, inner.len()) {
                    (None, 1) => inner.into_iter().next().ok_or("empty brackets")?,
                    (None, 0) => return Err("empty brackets".into()),
                    (name, _) => Node {
                        kind: NodeKind::Group(name.unwrap_or_default(), inner),
                        optional: false,
                        repeating: false,
                    },
                };
                if tok == "[" {
                    node.optional = true;
                } else {
                    node.repeating = true;
                }
                node
            }
            "]" | "}" | ":" => return Err(format!("unexpected '{tok}'")),
            id => {
                if id.len() != 3 {
                    return Err(format!("'{id}' is not a segment id"));
                }
                Node {
                    kind: NodeKind::Segment(id.to_string()),
                    optional: false,
                    repeating: false,
                }
            }
        };
        nodes.push(node);
    }
    match close {
        Some(c) => Err(format!("missing '{c}'")),
        None => Ok(nodes),
    }
}

fn starts_with(node: &Node, id: &str) -> bool {
    match &node.kind {
        NodeKind::Segment(s) => s == id,
        NodeKind::Group(_, children) => {
            for c in children {
                if starts_with(c, id) {
                    return true;
                }
                if !c.optional {
                    return false;
                }
            }
            false
        }
    }
}

struct Matcher<'g> {
    ids: &'g [&'g str],
    pos: usize,
    next_instance: u32,
    out: Vec<Placement>,
    known: &'g HashSet<String>,
}

impl Matcher<'_> {
    fn place(&mut self, prefix: &str, chain: &[u32], unexpected: bool) {
        let id = self.ids[self.pos];
        self.out.push(Placement {
            segment: self.pos,
            path: if prefix.is_empty() {
                id.to_string()
            } else {
                format!("{prefix}.{id}")
            },
            chain: chain.to_vec(),
            unexpected,
        });
        self.pos += 1;
    }

    fn seq(&mut self, nodes: &[Node], prefix: &str, chain: &[u32], root: bool) {
        let mut i = 0;
        while self.pos < self.ids.len() {
            let id = self.ids[self.pos];
            if id.starts_with('Z') || !self.known.contains(id) {
                // Kept where it appears: Z-segments extend the segment before them.
                let unexpected = !(id.starts_with('Z') || (root && id == "MSH"));
                self.place(prefix, chain, unexpected);
                continue;
            }
            if i >= nodes.len() {
                if !root {
                    return;
                }
                // Out of order at the top: resume at the first element that accepts it.
                match nodes.iter().position(|n| starts_with(n, id)) {
                    Some(j) => i = j,
                    None => {
                        self.place(prefix, chain, true);
                        continue;
                    }
                }
            }
            let node = &nodes[i];
            if !starts_with(node, id) {
                i += 1;
                continue;
            }
            match &node.kind {
                NodeKind::Segment(_) => self.place(prefix, chain, false),
                NodeKind::Group(name, children) => {
                    let inner = if name.is_empty() {
                        prefix.to_string()
                    } else if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    let mut c = chain.to_vec();
                    c.push(self.next_instance);
                    self.next_instance += 1;
                    let before = self.pos;
                    self.seq(children, &inner, &c, false);
                    if self.pos == before {
                        // Cannot happen (the group starts with this id), but never loop.
                        self.place(prefix, chain, true);
                    }
                }
            }
            if !node.repeating {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORU: &str = "MSH [{SFT}] {PATIENT_RESULT: [PATIENT: PID [PD1] [{NTE}] [VISIT: PV1 [PV2]]] \
        {ORDER_OBSERVATION: [ORC] OBR [{NTE}] [{OBSERVATION: OBX [{NTE}]}] [{SPECIMEN: SPM [{OBX}]}]}} [DSC]";

    #[test]
    fn oru_groups_keep_obr_obx_nesting() {
        let g = Grammar::parse(ORU).unwrap();
        let ids = [
            "MSH", "PID", "PV1", "OBR", "NTE", "OBX", "NTE", "OBX", "ZXX", "OBR", "OBX", "SPM",
            "OBX",
        ];
        let p = g.place(&ids);
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "MSH",
                "PATIENT_RESULT.PATIENT.PID",
                "PATIENT_RESULT.PATIENT.VISIT.PV1",
                "PATIENT_RESULT.ORDER_OBSERVATION.OBR",
                "PATIENT_RESULT.ORDER_OBSERVATION.NTE",
                "PATIENT_RESULT.ORDER_OBSERVATION.OBSERVATION.OBX",
                "PATIENT_RESULT.ORDER_OBSERVATION.OBSERVATION.NTE",
                "PATIENT_RESULT.ORDER_OBSERVATION.OBSERVATION.OBX",
                "PATIENT_RESULT.ORDER_OBSERVATION.OBSERVATION.ZXX",
                "PATIENT_RESULT.ORDER_OBSERVATION.OBR",
                "PATIENT_RESULT.ORDER_OBSERVATION.OBSERVATION.OBX",
                "PATIENT_RESULT.ORDER_OBSERVATION.SPECIMEN.SPM",
                "PATIENT_RESULT.ORDER_OBSERVATION.SPECIMEN.OBX",
            ]
        );
        // The two OBR are different ORDER_OBSERVATION instances under one PATIENT_RESULT.
        assert_eq!(p[3].chain[..2], p[9].chain[..2]);
        assert_ne!(p[3].chain[2], p[9].chain[2]);
        assert!(p.iter().all(|p| !p.unexpected));
    }

    #[test]
    fn unknown_and_out_of_order_segments_are_kept() {
        let g = Grammar::parse("MSH EVN PID [PD1] [{NK1}] PV1 [{AL1}]").unwrap();
        let p = g.place(&["MSH", "PID", "PV1", "NK1", "GT1", "AL1"]);
        assert_eq!(p.len(), 6);
        assert_eq!(p[3].path, "NK1");
        assert!(p[4].unexpected);
        assert_eq!(p[5].path, "AL1");
    }

    #[test]
    fn grammar_errors_are_reported() {
        assert!(Grammar::parse("MSH [PID").is_err());
        assert!(Grammar::parse("MSH PIDX").is_err());
        assert!(Grammar::parse("MSH ]").is_err());
    }
}
