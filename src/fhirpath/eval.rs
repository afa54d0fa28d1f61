//! The evaluator: walks the syntax tree over collections, with FHIRPath's empty propagation,
//! singleton evaluation and three-valued logic. Functions live in `functions.rs`.

use super::Environment;
use super::ast::{BinOp, Expr, Literal, TypeSpec};
use super::datetime::{Temporal, TemporalKind};
use super::error::EvalError;
use super::model;
use super::quantity::Quantity;
use super::value::{self, Collection, Node, Value};
use rust_decimal::Decimal;
use std::borrow::Cow;
use std::cmp::Ordering;

/// The iteration variables of the innermost lambda (`where`, `select`, ...), or the context at top level.
/// It borrows its collections: a lambda runs once per item, and owning `$this` would cost an
/// allocation per item.
#[derive(Clone, Copy)]
pub struct Frame<'f, 'a> {
    pub this: &'f [Value<'a>],
    pub index: Option<usize>,
    pub total: Option<&'f [Value<'a>]>,
}

/// One evaluation run over one context.
pub struct Evaluator<'e, 'a> {
    pub env: &'e Environment<'a>,
    /// Current nesting of function calls.
    pub depth: std::cell::Cell<usize>,
    /// Recent path steps resolved against the definitions.
    pub steps: model::StepCache,
    /// Emptied collections kept for reuse: a path step's intermediate results and the inputs of
    /// criteria (`path.contains('.')` once per element) are consumed within the evaluation, and
    /// reusing their buffers saves an allocation per step.
    pub spare: std::cell::RefCell<Vec<Collection<'a>>>,
    /// Subexpressions with one value per evaluation, and their values once computed.
    pub hoisted: &'e super::hoist::Hoisted,
    pub memo: std::cell::RefCell<Vec<Option<Collection<'a>>>>,
}

/// How many emptied collections an evaluation keeps for reuse.
const SPARE_COLLECTIONS: usize = 8;

pub(crate) type R<'a> = Result<Collection<'a>, EvalError>;

pub(crate) fn boolean<'a>(b: bool) -> Collection<'a> {
    vec![Value::Boolean(b)]
}

/// Singleton evaluation of a collection as a Boolean: empty is `None`; one Boolean is itself; one
/// other item is `true`; more is an error.
pub(crate) fn to_bool(c: &Collection, what: &str) -> Result<Option<bool>, EvalError> {
    match c.as_slice() {
        [] => Ok(None),
        [v] => match v.system() {
            Value::Boolean(b) => Ok(Some(b)),
            _ => Ok(Some(true)),
        },
        _ => Err(EvalError::new(
            what,
            format!("expected a single Boolean, got {} items", c.len()),
        )),
    }
}

/// The single item of a collection, `None` when empty, an error when several.
pub(crate) fn singleton<'c, 'a>(
    c: &'c Collection<'a>,
    what: &str,
) -> Result<Option<&'c Value<'a>>, EvalError> {
    match c.as_slice() {
        [] => Ok(None),
        [v] => Ok(Some(v)),
        _ => Err(EvalError::new(
            what,
            format!("expected a single item, got {}", c.len()),
        )),
    }
}

/// [`singleton`] for the input of function `name`: the `name()` label is formatted only for the
/// error, not on every call.
pub(crate) fn singleton_call<'c, 'a>(
    c: &'c [Value<'a>],
    name: &str,
) -> Result<Option<&'c Value<'a>>, EvalError> {
    match c {
        [] => Ok(None),
        [v] => Ok(Some(v)),
        _ => Err(EvalError::new(
            format!("{name}()"),
            format!("expected a single item, got {}", c.len()),
        )),
    }
}

pub(crate) fn literal<'a>(l: &Literal) -> Collection<'a> {
    match l {
        Literal::Empty => vec![],
        Literal::Boolean(b) => vec![Value::Boolean(*b)],
        Literal::String(s) => vec![Value::String(Cow::Owned(s.clone()))],
        Literal::Integer(i) => vec![Value::Integer(*i)],
        Literal::Long(i) => vec![Value::Long(*i)],
        Literal::Decimal(d) => vec![Value::Decimal(*d)],
        Literal::Temporal(t) => vec![Value::Temporal(*t)],
        Literal::Quantity(q) => vec![Value::Quantity(q.clone())],
    }
}

/// Below this many items `Distinct` compares directly instead of hashing.
const SCAN_LIMIT: usize = 16;

/// Collects items, dropping those equal to one already kept (for `|`, `distinct`, `union`,
/// `intersect`), in expected linear time.
#[derive(Default)]
pub(crate) struct Distinct<'a> {
    pub items: Collection<'a>,
    /// [`value::equality_hash`] (already a hash: a fast hasher is enough) -> the last item kept
    /// with that hash. Items sharing a hash are chained through `earlier`, so a new hash costs no
    /// allocation of its own.
    last: std::collections::HashMap<u64, usize, foldhash::fast::RandomState>,
    /// For each item once hashing has started, the previous item with the same hash.
    earlier: Vec<usize>,
}

/// The end of a chain in [`Distinct::earlier`].
const NO_ITEM: usize = usize::MAX;

impl<'a> Distinct<'a> {
    /// Adds `v` unless an equal item is there; true when added. Small collections are scanned
    /// (hashing a node hashes its whole subtree); larger ones are hashed.
    pub fn push(&mut self, v: Value<'a>) -> bool {
        if self.items.len() < SCAN_LIMIT {
            if self
                .items
                .iter()
                .any(|o| value::equals(o, &v) == Some(true))
            {
                return false;
            }
            self.items.push(v);
            if self.items.len() == SCAN_LIMIT {
                for i in 0..self.items.len() {
                    self.chain(value::equality_hash(&self.items[i]), i);
                }
            }
            return true;
        }
        let h = value::equality_hash(&v);
        if self.find(h, &v) {
            return false;
        }
        self.chain(h, self.items.len());
        self.items.push(v);
        true
    }

    /// Records item `i` under hash `h`.
    fn chain(&mut self, h: u64, i: usize) {
        let prev = self.last.insert(h, i).unwrap_or(NO_ITEM);
        self.earlier.push(prev);
    }

    /// True when an item with hash `h` equals `v`.
    fn find(&self, h: u64, v: &Value<'a>) -> bool {
        let mut i = self.last.get(&h).copied().unwrap_or(NO_ITEM);
        while i != NO_ITEM {
            if value::equals(&self.items[i], v) == Some(true) {
                return true;
            }
            i = self.earlier[i];
        }
        false
    }

    /// True when an item equal to `v` is there.
    pub fn contains(&self, v: &Value<'a>) -> bool {
        if self.items.len() < SCAN_LIMIT {
            return self.items.iter().any(|o| value::equals(o, v) == Some(true));
        }
        self.find(value::equality_hash(v), v)
    }
}

/// Most items one collection may hold, and most characters one computed string may hold: bounds
/// the memory a hostile expression can claim (`x.combine(x)` nested doubles each time).
pub(crate) const MAX_COLLECTION: usize = 1_000_000;
pub(crate) const MAX_STRING: usize = 1 << 20;

/// Rejects oversized computed strings.
pub(crate) fn checked_string<'a>(what: &str, s: String) -> Result<Value<'a>, EvalError> {
    if s.len() > MAX_STRING {
        return Err(EvalError::new(
            what,
            format!("result longer than {MAX_STRING} bytes"),
        ));
    }
    Ok(Value::String(Cow::Owned(s)))
}

impl<'e, 'a> Evaluator<'e, 'a> {
    pub fn eval(&self, e: &Expr, frame: &Frame<'_, 'a>) -> R<'a> {
        let Some(slot) = self.hoisted.slot(e) else {
            return self.eval_bounded(e, frame);
        };
        if let Some(known) = &self.memo.borrow()[slot] {
            return Ok(known.clone());
        }
        let r = self.eval_bounded(e, frame)?;
        self.memo.borrow_mut()[slot] = Some(r.clone());
        Ok(r)
    }

    fn eval_bounded(&self, e: &Expr, frame: &Frame<'_, 'a>) -> R<'a> {
        let r = self.eval_node(e, frame)?;
        if r.len() > MAX_COLLECTION {
            return Err(EvalError::new(
                "evaluation",
                format!("a collection grew beyond {MAX_COLLECTION} items"),
            ));
        }
        Ok(r)
    }

    fn eval_node(&self, e: &Expr, frame: &Frame<'_, 'a>) -> R<'a> {
        match e {
            Expr::Literal(l) => Ok(literal(l)),
            Expr::This => Ok(frame.this.to_vec()),
            Expr::Index => Ok(frame
                .index
                .map(|i| vec![Value::Integer(i as i64)])
                .unwrap_or_default()),
            Expr::Total => Ok(frame.total.map(<[_]>::to_vec).unwrap_or_default()),
            Expr::External(name) => self.external(name),
            Expr::Member { target, name, .. } => match target {
                Some(t) => {
                    let input = self.eval(t, frame)?;
                    let out = self.members(&input, name);
                    self.recycle(input);
                    out
                }
                None => self.root_member(frame.this, name),
            },
            Expr::Call {
                target, name, args, ..
            } => {
                let input = match target {
                    Some(t) => self.eval(t, frame)?,
                    None => frame.this.to_vec(),
                };
                self.call(name, input, args, frame, target.is_some())
            }
            Expr::Indexer(t, i) => {
                let input = self.eval(t, frame)?;
                let idx = self.eval(i, frame)?;
                match singleton(&idx, "[]")?.map(Value::system) {
                    None => Ok(vec![]),
                    Some(Value::Integer(i)) => Ok(usize::try_from(i)
                        .ok()
                        .and_then(|i| input.get(i).cloned())
                        .into_iter()
                        .collect()),
                    Some(v) => Err(EvalError::new(
                        "[]",
                        format!("index must be an Integer, got {}", v.type_name()),
                    )),
                }
            }
            Expr::Unary { negate, operand } => {
                let v = self.eval(operand, frame)?;
                let op = if *negate { "unary -" } else { "unary +" };
                let Some(v) = singleton(&v, op)? else {
                    return Ok(vec![]);
                };
                if !*negate {
                    return match v.system() {
                        x @ (Value::Integer(_)
                        | Value::Long(_)
                        | Value::Decimal(_)
                        | Value::Quantity(_)) => Ok(vec![x]),
                        x => Err(EvalError::new(
                            op,
                            format!("cannot apply to {}", x.type_name()),
                        )),
                    };
                }
                match v.system() {
                    Value::Integer(i) => Ok(vec![Value::Integer(-i)]),
                    Value::Long(i) => Ok(vec![Value::Long(-i)]),
                    Value::Decimal(d) if d.is_zero() => Ok(vec![Value::Decimal(d)]),
                    Value::Decimal(d) => Ok(vec![Value::Decimal(-d)]),
                    Value::Quantity(q) => Ok(vec![Value::Quantity(Quantity {
                        value: -q.value,
                        unit: q.unit,
                    })]),
                    x => Err(EvalError::new(
                        op,
                        format!("cannot negate {}", x.type_name()),
                    )),
                }
            }
            Expr::Binary { op, left, right } => self.binary(*op, left, right, frame),
            Expr::Is(t, spec) => {
                let input = self.eval(t, frame)?;
                match singleton(&input, "is")? {
                    None => Ok(vec![]),
                    Some(v) => Ok(boolean(self.is_type(v, spec)?)),
                }
            }
            Expr::As(t, spec) => {
                let input = self.eval(t, frame)?;
                match singleton(&input, "as")? {
                    Some(v) if self.is_type_exact(v, spec)? => Ok(vec![v.clone()]),
                    _ => Ok(vec![]),
                }
            }
        }
    }

    pub(crate) fn is_type(&self, v: &Value<'a>, spec: &TypeSpec) -> Result<bool, EvalError> {
        if self.env.strict && spec.namespace.is_none() {
            let known = model::is_system_type(&spec.name)
                || self
                    .env
                    .definitions
                    .is_none_or(|d| d.structure(&spec.name).is_some());
            if !known {
                return Err(EvalError::new(
                    "is",
                    format!("unknown type '{}'", spec.name),
                ));
            }
        }
        Ok(model::is_type(v, spec, self.env.definitions))
    }

    /// The test `as` and `ofType` apply: like `is`, except that a FHIR primitive must be exactly
    /// the named type (`code` is not taken as `string`).
    pub(crate) fn is_type_exact(&self, v: &Value<'a>, spec: &TypeSpec) -> Result<bool, EvalError> {
        if !self.is_type(v, spec)? {
            return Ok(false);
        }
        Ok(match v {
            Value::Node(Node { ty: Some(ty), .. })
                if ty.starts_with(|c: char| c.is_ascii_lowercase()) =>
            {
                *ty == spec.name
            }
            _ => true,
        })
    }

    fn external(&self, name: &str) -> R<'a> {
        if let Some(v) = self.env.variables.get(name) {
            return Ok(v.clone());
        }
        let s = |s: String| Ok(vec![Value::String(Cow::Owned(s))]);
        match name {
            "context" => Ok(self.env.context.clone()),
            "resource" => Ok(self.env.resource.clone().into_iter().collect()),
            "rootResource" => Ok(self
                .env
                .root_resource
                .clone()
                .or_else(|| self.env.resource.clone())
                .into_iter()
                .collect()),
            "ucum" => s("http://unitsofmeasure.org".into()),
            "sct" => s("http://snomed.info/sct".into()),
            "loinc" => s("http://loinc.org".into()),
            _ => {
                if let Some(vs) = name.strip_prefix("vs-") {
                    return s(format!("http://hl7.org/fhir/ValueSet/{vs}"));
                }
                if let Some(ext) = name.strip_prefix("ext-") {
                    return s(format!("http://hl7.org/fhir/StructureDefinition/{ext}"));
                }
                Err(EvalError::new(
                    format!("%{name}"),
                    "undefined environment variable",
                ))
            }
        }
    }

    /// A name at the start of a path: the resource type of the focus, else a child of the focus.
    fn root_member(&self, focus: &[Value<'a>], name: &str) -> R<'a> {
        if name.starts_with(|c: char| c.is_ascii_uppercase()) {
            let mut matched = Vec::new();
            let mut any_resource = false;
            for v in focus {
                if let Value::Node(n) = v
                    && let Some(ty) = n.ty
                {
                    if n.json.and_then(|j| j.get("resourceType")).is_some() {
                        any_resource = true;
                    }
                    if model::fhir_subtype(ty, name, self.env.definitions) {
                        matched.push(v.clone());
                    }
                }
            }
            if !matched.is_empty() {
                return Ok(matched);
            }
            let is_type_name = self
                .env
                .definitions
                .is_some_and(|d| d.structure(name).is_some());
            if is_type_name && any_resource {
                if self.env.strict {
                    return Err(EvalError::new(name, "the context is not of this type"));
                }
                return Ok(vec![]);
            }
        }
        self.members(focus, name)
    }

    /// An empty collection, reusing a recycled buffer when there is one.
    pub(crate) fn collection(&self) -> Collection<'a> {
        self.spare
            .try_borrow_mut()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default()
    }

    /// Takes back a collection the caller has finished with (see [`Evaluator::spare`]).
    pub(crate) fn recycle(&self, mut c: Collection<'a>) {
        if c.capacity() == 0 {
            return;
        }
        c.clear();
        if let Ok(mut s) = self.spare.try_borrow_mut()
            && s.len() < SPARE_COLLECTIONS
        {
            s.push(c);
        }
    }

    /// `input.name` over every item.
    pub(crate) fn members(&self, input: &[Value<'a>], name: &str) -> R<'a> {
        let mut out = self.collection();
        // A name unknown to one type may be known to another in a mixed collection (after
        // `descendants()`), so only a collection of one type can be judged; that is asked only
        // when strict evaluation meets an unknown name.
        let homogeneous = || {
            let first_ty = input
                .first()
                .and_then(|v| if let Value::Node(n) = v { n.ty } else { None });
            input
                .iter()
                .all(|v| matches!(v, Value::Node(n) if n.ty == first_ty))
        };
        for v in input {
            if let Value::TypeInfo {
                namespace,
                name: tn,
            } = v
            {
                match name {
                    "namespace" => out.push(Value::String(Cow::Borrowed(namespace))),
                    "name" => out.push(Value::String(tn.clone())),
                    _ => {}
                }
                continue;
            }
            if let Value::Node(n) = v
                && let model::Lookup::Unknown = model::child(
                    n,
                    name,
                    self.env.definitions,
                    self.env.strict,
                    &self.steps,
                    &mut out,
                )
                && self.env.strict
                && homogeneous()
            {
                return Err(EvalError::new(
                    format!(".{name}"),
                    format!(
                        "'{name}' is not an element of {}",
                        n.ty.unwrap_or("this type")
                    ),
                ));
            }
        }
        Ok(out)
    }

    fn binary(&self, op: BinOp, left: &Expr, right: &Expr, frame: &Frame<'_, 'a>) -> R<'a> {
        if let BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies = op {
            return Ok(self
                .logic(op, left, right, frame)?
                .map(boolean)
                .unwrap_or_default());
        }
        let l = self.eval(left, frame)?;
        let r = self.eval(right, frame)?;
        self.apply_binary(op, l, r)
    }

    /// `and`, `or`, `xor`, `implies` in three-valued logic, short-circuiting where it allows.
    fn logic(
        &self,
        op: BinOp,
        left: &Expr,
        right: &Expr,
        frame: &Frame<'_, 'a>,
    ) -> Result<Option<bool>, EvalError> {
        let l = self.eval_bool(left, frame, op.symbol())?;
        match (op, l) {
            (BinOp::And, Some(false)) => return Ok(Some(false)),
            (BinOp::Or, Some(true)) => return Ok(Some(true)),
            (BinOp::Implies, Some(false)) => return Ok(Some(true)),
            _ => {}
        }
        let r = self.eval_bool(right, frame, op.symbol())?;
        Ok(match op {
            BinOp::And => match (l, r) {
                (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            BinOp::Or => match (l, r) {
                (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            BinOp::Xor => match (l, r) {
                (Some(a), Some(b)) => Some(a != b),
                _ => None,
            },
            _ => match (l, r) {
                (Some(true), r) => r,
                (None, Some(true)) => Some(true),
                _ => None,
            },
        })
    }

    /// `to_bool(eval(e), what)`, without building the one-item collections of the usual Boolean
    /// shapes (logic operators, `not()`, `exists()`, `empty()`, `contains()`, ...): criteria run
    /// once per item of `where()`, `all()` and `exists()`, so those allocations added up. Errors,
    /// call depth and short-circuiting are those of the general path.
    pub(crate) fn eval_bool(
        &self,
        e: &Expr,
        frame: &Frame<'_, 'a>,
        what: &str,
    ) -> Result<Option<bool>, EvalError> {
        match e {
            Expr::Binary {
                op: op @ (BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies),
                left,
                right,
            } => self.logic(*op, left, right, frame),
            Expr::Call {
                target: Some(t),
                name,
                args,
                ..
            } if args.is_empty() && matches!(name.as_str(), "not" | "exists" | "empty") => {
                if name == "not" {
                    // `not()` judges its input as a singleton Boolean; its result is one
                    // Boolean or empty, which the caller's test takes as it is.
                    let input = self.eval_bool(t, frame, "not()")?;
                    return self.nested(name, || Ok(input.map(|b| !b)));
                }
                let input = self.eval(t, frame)?;
                let r = self.nested(name, || Ok(Some(input.is_empty() == (name == "empty"))));
                self.recycle(input);
                r
            }
            Expr::Call {
                target: Some(t),
                name,
                args,
                ..
            } if args.len() == 1
                && matches!(name.as_str(), "contains" | "startsWith" | "endsWith") =>
            {
                let input = self.eval(t, frame)?;
                let r = self.nested(name, || {
                    let Some(s) = self.input_string(name, &input)? else {
                        return Ok(None);
                    };
                    let Some(sub) = self.arg_string(name, args, 0, frame)? else {
                        return Ok(None);
                    };
                    Ok(Some(match name.as_str() {
                        "startsWith" => s.starts_with(&*sub),
                        "endsWith" => s.ends_with(&*sub),
                        _ => s.contains(&*sub),
                    }))
                });
                self.recycle(input);
                r
            }
            _ => {
                let c = self.eval(e, frame)?;
                let r = to_bool(&c, what);
                self.recycle(c);
                r
            }
        }
    }

    pub(crate) fn apply_binary(&self, op: BinOp, l: Collection<'a>, r: Collection<'a>) -> R<'a> {
        let sym = op.symbol();
        match op {
            BinOp::Union => {
                let mut out = Distinct::default();
                for v in l.into_iter().chain(r) {
                    out.push(v);
                }
                Ok(out.items)
            }
            BinOp::Eq | BinOp::Ne => {
                if l.is_empty() || r.is_empty() {
                    return Ok(vec![]);
                }
                let eq = if l.len() != r.len() {
                    Some(false)
                } else {
                    let mut acc = Some(true);
                    for (a, b) in l.iter().zip(&r) {
                        match value::equals(a, b) {
                            Some(true) => {}
                            Some(false) => {
                                acc = Some(false);
                                break;
                            }
                            None => acc = None,
                        }
                    }
                    acc
                };
                Ok(eq
                    .map(|e| boolean(if op == BinOp::Eq { e } else { !e }))
                    .unwrap_or_default())
            }
            BinOp::Equiv | BinOp::NotEquiv => {
                let eq = collections_equivalent(&l, &r);
                Ok(boolean(if op == BinOp::Equiv { eq } else { !eq }))
            }
            BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
                let (Some(a), Some(b)) = (singleton(&l, sym)?, singleton(&r, sym)?) else {
                    return Ok(vec![]);
                };
                let ord = value::compare(a, b).map_err(|m| EvalError::new(sym, m))?;
                Ok(ord
                    .map(|o| {
                        boolean(match op {
                            BinOp::Lt => o == Ordering::Less,
                            BinOp::Gt => o == Ordering::Greater,
                            BinOp::Le => o != Ordering::Greater,
                            _ => o != Ordering::Less,
                        })
                    })
                    .unwrap_or_default())
            }
            BinOp::In | BinOp::Contains => {
                let (item, coll) = if op == BinOp::In { (&l, &r) } else { (&r, &l) };
                let Some(item) = singleton(item, sym)? else {
                    return Ok(vec![]);
                };
                Ok(boolean(
                    coll.iter().any(|c| value::equals(c, item) == Some(true)),
                ))
            }
            BinOp::Concat => {
                let a = singleton(&l, sym)?
                    .map(|v| v.as_str().map(|s| s.into_owned()))
                    .unwrap_or(Some(String::new()));
                let b = singleton(&r, sym)?
                    .map(|v| v.as_str().map(|s| s.into_owned()))
                    .unwrap_or(Some(String::new()));
                match (a, b) {
                    (Some(a), Some(b)) => Ok(vec![checked_string(sym, a + &b)?]),
                    _ => Err(EvalError::new(sym, "operands must be strings")),
                }
            }
            _ => {
                let (Some(a), Some(b)) = (singleton(&l, sym)?, singleton(&r, sym)?) else {
                    return Ok(vec![]);
                };
                arithmetic(op, &a.system(), &b.system())
            }
        }
    }
}

fn collections_equivalent(l: &Collection, r: &Collection) -> bool {
    if l.len() != r.len() {
        return false;
    }
    let mut used = vec![false; r.len()];
    'outer: for a in l {
        for (i, b) in r.iter().enumerate() {
            if !used[i] && value::equivalent(a, b) {
                used[i] = true;
                continue 'outer;
            }
        }
        return false;
    }
    true
}

fn num(v: &Value) -> Option<Decimal> {
    match v {
        Value::Integer(i) | Value::Long(i) => Some(Decimal::from(*i)),
        Value::Decimal(d) => Some(*d),
        _ => None,
    }
}

fn arithmetic<'a>(op: BinOp, a: &Value<'a>, b: &Value<'a>) -> R<'a> {
    let sym = op.symbol();
    let bad = || {
        Err(EvalError::new(
            sym,
            format!("cannot apply to {} and {}", a.type_name(), b.type_name()),
        ))
    };
    let some = |v: Option<Value<'a>>| Ok(v.into_iter().collect());
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) | (Value::Long(x), Value::Long(y)) => {
            let long = matches!(a, Value::Long(_));
            let wrap = |i: i64| {
                if long {
                    Value::Long(i)
                } else {
                    Value::Integer(i)
                }
            };
            match op {
                BinOp::Add => some(x.checked_add(*y).map(wrap)),
                BinOp::Sub => some(x.checked_sub(*y).map(wrap)),
                BinOp::Mul => some(x.checked_mul(*y).map(wrap)),
                BinOp::Div => some(
                    Decimal::from(*x)
                        .checked_div(Decimal::from(*y))
                        .map(|d| Value::Decimal(d.normalize())),
                ),
                BinOp::IntDiv => some(x.checked_div(*y).map(wrap)),
                BinOp::Mod => some(x.checked_rem(*y).map(wrap)),
                _ => bad(),
            }
        }
        (Value::String(x), Value::String(y)) if op == BinOp::Add => {
            Ok(vec![checked_string(sym, format!("{x}{y}"))?])
        }
        (Value::Temporal(t), Value::Quantity(q)) if matches!(op, BinOp::Add | BinOp::Sub) => {
            temporal_add(t, q, op == BinOp::Sub).map(|t| vec![Value::Temporal(t)])
        }
        (Value::Quantity(_) | Value::Node(_), _) | (_, Value::Quantity(_) | Value::Node(_)) => {
            let to_q = |v: &Value| match v {
                Value::Integer(_) | Value::Long(_) | Value::Decimal(_) => {
                    num(v).map(|d| Quantity {
                        value: d,
                        unit: "1".into(),
                    })
                }
                other => value::as_quantity(other),
            };
            let (Some(x), Some(y)) = (to_q(a), to_q(b)) else {
                return bad();
            };
            match op {
                BinOp::Add => some(x.add(&y, false).map(Value::Quantity)),
                BinOp::Sub => some(x.add(&y, true).map(Value::Quantity)),
                BinOp::Mul => some(x.mul_div(&y, false).map(Value::Quantity)),
                BinOp::Div => {
                    if y.value.is_zero() {
                        return Ok(vec![]);
                    }
                    some(x.mul_div(&y, true).map(Value::Quantity))
                }
                _ => bad(),
            }
        }
        _ => {
            let (Some(x), Some(y)) = (num(a), num(b)) else {
                return bad();
            };
            match op {
                BinOp::Add => some(x.checked_add(y).map(Value::Decimal)),
                BinOp::Sub => some(x.checked_sub(y).map(Value::Decimal)),
                BinOp::Mul => some(x.checked_mul(y).map(Value::Decimal)),
                BinOp::Div => some(x.checked_div(y).map(Value::Decimal)),
                BinOp::IntDiv => some(
                    x.checked_div(y)
                        .and_then(|d| rust_decimal::prelude::ToPrimitive::to_i64(&d.trunc()))
                        .map(Value::Integer),
                ),
                BinOp::Mod => some(x.checked_rem(y).map(Value::Decimal)),
                _ => bad(),
            }
        }
    }
}

fn temporal_add(t: &Temporal, q: &Quantity, subtract: bool) -> Result<Temporal, EvalError> {
    let sym = if subtract { "-" } else { "+" };
    if matches!(q.unit.as_str(), "a" | "mo") {
        return Err(EvalError::new(
            sym,
            format!("'{}' is not a calendar duration; use year or month", q.unit),
        ));
    }
    let v = if subtract { -q.value } else { q.value };
    let kind_ok = !(t.kind == TemporalKind::Time
        && matches!(
            q.unit.as_str(),
            "year" | "month" | "week" | "day" | "wk" | "d"
        ));
    match t.add(v, &q.unit) {
        Some(r) if kind_ok => Ok(r),
        _ => Err(EvalError::new(
            sym,
            format!("cannot add '{}' to a {}", q.unit, t.type_name()),
        )),
    }
}
