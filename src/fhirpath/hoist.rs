//! Subexpressions whose value cannot change within one evaluation, found once per parse and
//! evaluated once per evaluation.
//!
//! A criterion runs once per item of its input: in dom-3 (on every DomainResource)
//! `contained.where('#'+id in (%resource.descendants().reference | %resource.descendants().as(uri)
//! | ...))` walks the whole resource four times for each contained resource, although nothing in
//! the union depends on the item. Such a subexpression is *free*: it starts from an environment
//! variable or a literal, never from the focus (`$this`, `$index`, `$total`, a bare member name or
//! a function without input), and its non-criterion arguments are free too. Criteria of a free
//! call (`%resource.descendants().where(reference = '#')`) only see their own items, so they do not
//! make it depend on the outer focus. The environment is fixed for an evaluation (this engine has
//! no `defineVariable`), so a free subexpression has one value per evaluation.
//!
//! Memoised are free subexpressions that navigate (a member or a call on something) and either
//! sit inside a criterion or occur more than once; equal ones (ignoring source positions) share a
//! value. `trace()` is never memoised: each call is meant to be seen.

use super::ast::Expr;

/// The memoised nodes of one syntax tree.
#[derive(Debug, Default)]
pub struct Hoisted {
    /// (node address, memo slot), sorted by address. The tree lives in an `Arc` next to this
    /// table and is never moved or changed, so the addresses stay valid.
    nodes: Vec<(usize, usize)>,
    slots: usize,
}

/// Functions whose arguments at these positions are criteria, evaluated once per input item
/// with that item as focus.
fn is_criterion(function: &str, arg: usize) -> bool {
    match function {
        "where" | "select" | "repeat" | "exists" | "all" => arg == 0,
        "aggregate" => arg == 0,
        "sort" => true,
        _ => false,
    }
}

/// Functions whose arguments are type names (`ofType(Patient)`), not expressions.
fn takes_type_names(function: &str) -> bool {
    matches!(function, "ofType" | "is" | "as")
}

struct Candidate<'e> {
    node: &'e Expr,
    in_criterion: bool,
}

impl Hoisted {
    pub fn of(ast: &Expr) -> Hoisted {
        let mut found = Vec::new();
        free(ast, false, &mut found);
        // Group equal subexpressions; keep those in a criterion or occurring more than once.
        let mut groups: Vec<Vec<&Candidate>> = Vec::new();
        for c in &found {
            match groups.iter_mut().find(|g| same(g[0].node, c.node)) {
                Some(g) => g.push(c),
                None => groups.push(vec![c]),
            }
        }
        let mut nodes = Vec::new();
        let mut slots = 0;
        for g in groups {
            if g.len() > 1 || g.iter().any(|c| c.in_criterion) {
                nodes.extend(g.iter().map(|c| (address(c.node), slots)));
                slots += 1;
            }
        }
        nodes.sort_unstable();
        Hoisted { nodes, slots }
    }

    /// Number of memo slots an evaluation needs.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The memo slot of `e`, if it is memoised.
    pub fn slot(&self, e: &Expr) -> Option<usize> {
        if self.nodes.is_empty() {
            return None;
        }
        let a = address(e);
        self.nodes
            .binary_search_by_key(&a, |n| n.0)
            .ok()
            .map(|i| self.nodes[i].1)
    }
}

fn address(e: &Expr) -> usize {
    e as *const Expr as usize
}

/// Whether `e` is free (see the module comment); collects the free navigating nodes below and at
/// `e`. Every child is visited, so candidates inside non-free nodes are found too.
fn free<'e>(e: &'e Expr, in_criterion: bool, found: &mut Vec<Candidate<'e>>) -> bool {
    let (is_free, navigates) = match e {
        Expr::Literal(_) | Expr::External(_) => (true, false),
        Expr::This | Expr::Index | Expr::Total => (false, false),
        Expr::Member { target, .. } => match target {
            Some(t) => (free(t, in_criterion, found), true),
            None => (false, false),
        },
        Expr::Call {
            target, name, args, ..
        } => {
            let input = match target {
                Some(t) => free(t, in_criterion, found),
                None => false,
            };
            let mut all = input && name != "trace";
            for (i, a) in args.iter().enumerate() {
                if takes_type_names(name) {
                    continue;
                }
                let criterion = is_criterion(name, i);
                let arg_free = free(a, in_criterion || criterion, found);
                // A criterion's focus is the call's own input items.
                all &= criterion || arg_free;
            }
            (all, true)
        }
        Expr::Indexer(t, i) => {
            let a = free(t, in_criterion, found);
            let b = free(i, in_criterion, found);
            (a && b, true)
        }
        Expr::Unary { operand, .. } => (free(operand, in_criterion, found), false),
        Expr::Binary { left, right, .. } => {
            let a = free(left, in_criterion, found);
            let b = free(right, in_criterion, found);
            (a && b, navigates(left) || navigates(right))
        }
        Expr::Is(t, _) | Expr::As(t, _) => (free(t, in_criterion, found), navigates(t)),
    };
    if is_free && navigates {
        found.push(Candidate {
            node: e,
            in_criterion,
        });
    }
    is_free
}

/// Whether `e` contains a member access or a call on something (anything worth remembering).
fn navigates(e: &Expr) -> bool {
    match e {
        Expr::Literal(_) | Expr::External(_) | Expr::This | Expr::Index | Expr::Total => false,
        Expr::Member { .. } | Expr::Call { .. } | Expr::Indexer(..) => true,
        Expr::Unary { operand, .. } => navigates(operand),
        Expr::Binary { left, right, .. } => navigates(left) || navigates(right),
        Expr::Is(t, _) | Expr::As(t, _) => navigates(t),
    }
}

/// Structural equality, ignoring source positions.
fn same(a: &Expr, b: &Expr) -> bool {
    let opt = |x: &Option<Box<Expr>>, y: &Option<Box<Expr>>| match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => same(x, y),
        _ => false,
    };
    match (a, b) {
        (Expr::Literal(x), Expr::Literal(y)) => x == y,
        (Expr::This, Expr::This) | (Expr::Index, Expr::Index) | (Expr::Total, Expr::Total) => true,
        (Expr::External(x), Expr::External(y)) => x == y,
        (
            Expr::Member {
                target: t1,
                name: n1,
                ..
            },
            Expr::Member {
                target: t2,
                name: n2,
                ..
            },
        ) => n1 == n2 && opt(t1, t2),
        (
            Expr::Call {
                target: t1,
                name: n1,
                args: a1,
                ..
            },
            Expr::Call {
                target: t2,
                name: n2,
                args: a2,
                ..
            },
        ) => {
            n1 == n2
                && a1.len() == a2.len()
                && a1.iter().zip(a2).all(|(x, y)| same(x, y))
                && opt(t1, t2)
        }
        (Expr::Indexer(t1, i1), Expr::Indexer(t2, i2)) => same(t1, t2) && same(i1, i2),
        (
            Expr::Unary {
                negate: n1,
                operand: o1,
            },
            Expr::Unary {
                negate: n2,
                operand: o2,
            },
        ) => n1 == n2 && same(o1, o2),
        (
            Expr::Binary {
                op: p1,
                left: l1,
                right: r1,
            },
            Expr::Binary {
                op: p2,
                left: l2,
                right: r2,
            },
        ) => p1 == p2 && same(l1, l2) && same(r1, r2),
        (Expr::Is(t1, s1), Expr::Is(t2, s2)) | (Expr::As(t1, s1), Expr::As(t2, s2)) => {
            s1 == s2 && same(t1, t2)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhirpath::parse;

    /// How many nodes share each memo slot.
    fn hoisted(src: &str) -> Vec<usize> {
        let e = parse(src).unwrap();
        let h = Hoisted::of(e.ast());
        let mut per_slot = vec![0; h.slots()];
        for (_, s) in &h.nodes {
            per_slot[*s] += 1;
        }
        per_slot
    }

    #[test]
    fn free_subexpressions_in_criteria_are_memoised() {
        // The union and each branch (and the shared %resource.descendants()) are free.
        let dom3 = "contained.where(('#'+id in (%resource.descendants().reference | \
                    %resource.descendants().as(uri))).not()).empty()";
        let slots = hoisted(dom3);
        // %resource.descendants() (twice, one slot), .reference, .as(uri), the union.
        assert_eq!(slots.len(), 4, "{slots:?}");
        assert!(slots.contains(&2));
    }

    #[test]
    fn what_depends_on_the_focus_is_not_memoised() {
        // Everything here reads the focus or an iteration variable.
        for src in [
            "name.where(given = 'x')",
            "name.where($this.given.exists())",
            "name.select($index)",
            "name.where(given.exists()).count()",
            "aggregate($total + 1, 0)",
        ] {
            assert_eq!(hoisted(src), Vec::<usize>::new(), "{src}");
        }
    }

    #[test]
    fn a_free_call_with_a_criterion_is_memoised_as_a_whole() {
        // The inner criterion's focus is %resource's descendants, not name's items.
        let slots = hoisted("name.where(%resource.descendants().where(reference = '#').exists())");
        // %resource.descendants(), .where(..), .exists()
        assert_eq!(slots.len(), 3, "{slots:?}");
    }

    #[test]
    fn a_free_subexpression_outside_criteria_is_memoised_only_when_repeated() {
        assert_eq!(hoisted("%resource.id.exists()"), Vec::<usize>::new());
        assert_eq!(hoisted("%resource.id = %resource.id"), vec![2]);
    }

    #[test]
    fn trace_and_focus_arguments_are_never_memoised() {
        assert_eq!(
            hoisted("name.where(%resource.id.trace('x').exists())"),
            vec![1],
            "only %resource.id"
        );
        // combine()'s argument is evaluated on the outer focus.
        assert_eq!(
            hoisted("name.where(%resource.name.combine(given).exists())"),
            vec![1],
            "only %resource.name"
        );
    }
}
