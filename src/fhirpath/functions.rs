//! The function library: existence, filtering, subsetting, combining, conversion, string, math,
//! tree navigation, utility and the FHIR additions (`extension`, `resolve`, `memberOf`, ...).

use super::ast::{BinOp, Expr, Literal, TypeSpec};
use super::datetime::{Precision, Temporal, TemporalKind};
use super::error::EvalError;
use super::eval::{
    Distinct, Evaluator, Frame, MAX_STRING, R, boolean, checked_string, singleton, singleton_call,
    to_bool,
};
use super::model;
use super::quantity::{Quantity, is_calendar_unit, singular_calendar};
use super::value::{self, Collection, Node, Value, parse_decimal, to_string_value};
use rust_decimal::prelude::{MathematicalOps, ToPrimitive};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

/// Most items `repeat()`/`descendants()` may produce: a bound on work for hostile input.
/// How deeply function calls may nest during one evaluation (bounds the stack).
const MAX_CALL_DEPTH: usize = 64;

const MAX_ITEMS: usize = 200_000;

/// Most System values `repeat()` may see (each is compared with all before it).
const MAX_REPEATED_VALUES: usize = 2_000;

fn arity(name: &str, args: &[Expr], min: usize, max: usize) -> Result<(), EvalError> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(EvalError::new(
            format!("{name}()"),
            format!("takes {want} argument(s), got {}", args.len()),
        ));
    }
    Ok(())
}

fn err(name: &str, msg: impl Into<String>) -> EvalError {
    EvalError::new(format!("{name}()"), msg)
}

fn string<'a>(s: String) -> Value<'a> {
    Value::String(Cow::Owned(s))
}

impl<'e, 'a> Evaluator<'e, 'a> {
    /// Evaluates a non-lambda argument against the invocation's context.
    fn arg(&self, name: &str, args: &[Expr], i: usize, frame: &Frame<'_, 'a>) -> R<'a> {
        match args.get(i) {
            Some(e) => self.eval(e, frame),
            None => Err(err(name, format!("missing argument {}", i + 1))),
        }
    }

    fn arg_single(
        &self,
        name: &str,
        args: &[Expr],
        i: usize,
        frame: &Frame<'_, 'a>,
    ) -> Result<Option<Value<'a>>, EvalError> {
        let c = self.arg(name, args, i, frame)?;
        match c.as_slice() {
            [] => Ok(None),
            [v] => Ok(Some(v.system())),
            _ => Err(err(
                name,
                format!("argument {} must be a single item, got {}", i + 1, c.len()),
            )),
        }
    }

    pub(crate) fn arg_string<'x>(
        &self,
        name: &str,
        args: &'x [Expr],
        i: usize,
        frame: &Frame<'_, 'a>,
    ) -> Result<Option<Cow<'x, str>>, EvalError> {
        // A literal (`contains('.')`, the usual case) is borrowed from the tree, not copied.
        if let Some(Expr::Literal(Literal::String(s))) = args.get(i) {
            return Ok(Some(Cow::Borrowed(s)));
        }
        match self.arg_single(name, args, i, frame)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(Cow::Owned(s.into_owned()))),
            Some(v) => Err(err(
                name,
                format!("argument {} must be a String, got {}", i + 1, v.type_name()),
            )),
        }
    }

    fn arg_integer(
        &self,
        name: &str,
        args: &[Expr],
        i: usize,
        frame: &Frame<'_, 'a>,
    ) -> Result<Option<i64>, EvalError> {
        match self.arg_single(name, args, i, frame)? {
            None => Ok(None),
            Some(Value::Integer(n)) | Some(Value::Long(n)) => Ok(Some(n)),
            Some(v) => Err(err(
                name,
                format!(
                    "argument {} must be an Integer, got {}",
                    i + 1,
                    v.type_name()
                ),
            )),
        }
    }

    /// Evaluates a lambda argument for one item.
    fn lambda(
        &self,
        e: &Expr,
        item: &Value<'a>,
        index: usize,
        total: Option<&Collection<'a>>,
    ) -> R<'a> {
        let frame = Frame {
            this: std::slice::from_ref(item),
            index: Some(index),
            total: total.map(Vec::as_slice),
        };
        self.eval(e, &frame)
    }

    /// A criterion lambda for one item as a singleton Boolean (`to_bool(lambda(..), what)`).
    fn lambda_bool(
        &self,
        e: &Expr,
        item: &Value<'a>,
        index: usize,
        what: &str,
    ) -> Result<Option<bool>, EvalError> {
        let frame = Frame {
            this: std::slice::from_ref(item),
            index: Some(index),
            total: None,
        };
        self.eval_bool(e, &frame, what)
    }

    fn type_arg(&self, name: &str, args: &[Expr]) -> Result<TypeSpec, EvalError> {
        args.first()
            .and_then(Expr::as_type_spec)
            .ok_or_else(|| err(name, "argument must be a type name"))
    }

    /// The input as a single string for string functions: empty gives `None`; several items or a
    /// non-string is an error.
    pub(crate) fn input_string<'x>(
        &self,
        name: &str,
        input: &'x [Value<'a>],
    ) -> Result<Option<Cow<'x, str>>, EvalError> {
        match singleton_call(input, name)? {
            None => Ok(None),
            Some(v) => match v.as_str() {
                Some(s) => Ok(Some(s)),
                None => Err(err(
                    name,
                    format!("input must be a String, got {}", v.type_name()),
                )),
            },
        }
    }

    /// Calls function `name` on `input`. Each family of functions has its own (non-inlined)
    /// method, so the stack frame a nested call costs stays small.
    pub(crate) fn call(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        frame: &Frame<'_, 'a>,
        has_target: bool,
    ) -> R<'a> {
        self.nested(name, || self.dispatch(name, input, args, frame, has_target))
    }

    /// Runs the body of call `name` one level deeper, refusing calls nested beyond
    /// [`MAX_CALL_DEPTH`].
    pub(crate) fn nested<T>(
        &self,
        name: &str,
        body: impl FnOnce() -> Result<T, EvalError>,
    ) -> Result<T, EvalError> {
        let depth = self.depth.get();
        if depth >= MAX_CALL_DEPTH {
            return Err(err(
                name,
                format!("calls nested deeper than {MAX_CALL_DEPTH}"),
            ));
        }
        self.depth.set(depth + 1);
        let r = body();
        self.depth.set(depth);
        r
    }

    fn dispatch(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        frame: &Frame<'_, 'a>,
        has_target: bool,
    ) -> R<'a> {
        match name {
            "empty" | "exists" | "all" | "allTrue" | "anyTrue" | "allFalse" | "anyFalse"
            | "subsetOf" | "supersetOf" | "count" | "distinct" | "isDistinct" => {
                self.call_existence(name, input, args, frame)
            }
            "where" | "select" | "repeat" | "ofType" | "is" | "as" => {
                self.call_filtering_and_projection(name, input, args)
            }
            "single" | "first" | "last" | "tail" | "skip" | "take" | "intersect" | "exclude" => {
                self.call_subsetting(name, input, args, frame)
            }
            "union" | "combine" => self.call_combining(name, input, args, frame),
            "iif" | "toBoolean" | "convertsToBoolean" | "toInteger" | "convertsToInteger"
            | "toLong" | "convertsToLong" | "toDecimal" | "convertsToDecimal" | "toString"
            | "convertsToString" | "toDate" | "convertsToDate" | "toDateTime"
            | "convertsToDateTime" | "toTime" | "convertsToTime" | "toQuantity"
            | "convertsToQuantity" => self.call_conversion(name, input, args, frame, has_target),
            "indexOf" | "substring" | "startsWith" | "endsWith" | "contains" | "upper"
            | "lower" | "trim" | "length" | "toChars" | "replace" | "matches" | "matchesFull"
            | "replaceMatches" | "split" | "join" | "encode" | "decode" | "escape" | "unescape" => {
                self.call_strings(name, input, args, frame)
            }
            "abs" | "ceiling" | "exp" | "floor" | "ln" | "sqrt" | "truncate" | "round" | "log"
            | "power" => self.call_math(name, input, args, frame),
            "children" | "descendants" => self.call_tree_navigation(name, input, args),
            "trace" | "now" | "today" | "timeOfDay" | "aggregate" | "not" | "type" | "sort"
            | "lowBoundary" | "highBoundary" | "precision" | "comparable" => {
                self.call_utility(name, input, args, frame)
            }
            "extension" | "hasValue" | "getValue" | "resolve" | "memberOf" | "conformsTo"
            | "htmlChecks" | "htmlchecks" | "elementDefinition" | "slice" | "checkModifiers"
            | "subsumes" | "subsumedBy" | "defineVariable" => {
                self.call_fhir_additions(name, input, args, frame)
            }
            _ => Err(err(name, "unknown function")),
        }
    }

    /// Existence functions.
    #[inline(never)]
    fn call_existence(
        &self,
        f: &str,
        input: Collection<'a>,
        args: &[Expr],
        frame: &Frame<'_, 'a>,
    ) -> R<'a> {
        match f {
            "empty" => {
                arity(f, args, 0, 0)?;
                Ok(boolean(input.is_empty()))
            }
            "exists" => {
                arity(f, args, 0, 1)?;
                match args.first() {
                    None => Ok(boolean(!input.is_empty())),
                    Some(c) => {
                        for (i, v) in input.iter().enumerate() {
                            if self.lambda_bool(c, v, i, "exists()")? == Some(true) {
                                return Ok(boolean(true));
                            }
                        }
                        Ok(boolean(false))
                    }
                }
            }
            "all" => {
                arity(f, args, 1, 1)?;
                for (i, v) in input.iter().enumerate() {
                    if self.lambda_bool(&args[0], v, i, "all()")? != Some(true) {
                        return Ok(boolean(false));
                    }
                }
                Ok(boolean(true))
            }
            "allTrue" | "anyTrue" | "allFalse" | "anyFalse" => {
                arity(f, args, 0, 0)?;
                let mut bools = Vec::with_capacity(input.len());
                for v in &input {
                    match v.system() {
                        Value::Boolean(b) => bools.push(b),
                        o => {
                            return Err(err(
                                f,
                                format!("items must be Booleans, got {}", o.type_name()),
                            ));
                        }
                    }
                }
                Ok(boolean(match f {
                    "allTrue" => bools.iter().all(|b| *b),
                    "anyTrue" => bools.iter().any(|b| *b),
                    "allFalse" => bools.iter().all(|b| !*b),
                    _ => bools.iter().any(|b| !*b),
                }))
            }
            "subsetOf" | "supersetOf" => {
                arity(f, args, 1, 1)?;
                let other = self.arg(f, args, 0, frame)?;
                let (sub, sup) = if f == "subsetOf" {
                    (&input, &other)
                } else {
                    (&other, &input)
                };
                Ok(boolean(sub.iter().all(|a| {
                    sup.iter().any(|b| value::equals(a, b) == Some(true))
                })))
            }
            "count" => {
                arity(f, args, 0, 0)?;
                Ok(vec![Value::Integer(input.len() as i64)])
            }
            "distinct" => {
                arity(f, args, 0, 0)?;
                let mut out = Distinct::default();
                for v in input {
                    out.push(v);
                }
                Ok(out.items)
            }
            "isDistinct" => {
                arity(f, args, 0, 0)?;
                let mut out = Distinct::default();
                for v in input {
                    if !out.push(v) {
                        return Ok(boolean(false));
                    }
                }
                Ok(boolean(true))
            }
            _ => Err(err(f, "unknown function")),
        }
    }
    /// Filtering and projection functions.
    #[inline(never)]
    fn call_filtering_and_projection(
        &self,
        f: &str,
        input: Collection<'a>,
        args: &[Expr],
    ) -> R<'a> {
        match f {
            "where" => {
                arity(f, args, 1, 1)?;
                let mut out = Vec::new();
                for (i, v) in input.into_iter().enumerate() {
                    if self.lambda_bool(&args[0], &v, i, "where()")? == Some(true) {
                        out.push(v);
                    }
                }
                Ok(out)
            }
            "select" => {
                arity(f, args, 1, 1)?;
                let mut out = Vec::new();
                for (i, v) in input.iter().enumerate() {
                    let mut r = self.lambda(&args[0], v, i, None)?;
                    out.append(&mut r);
                    self.recycle(r);
                }
                Ok(out)
            }
            "repeat" => {
                arity(f, args, 1, 1)?;
                let mut out: Collection<'a> = Vec::new();
                // Nodes are told apart by identity (cheap); System values by equality, with a tighter
                // bound since that test is linear.
                let mut seen_nodes: HashSet<*const Json> = HashSet::new();
                let mut system_values = 0usize;
                let mut queue = input;
                while !queue.is_empty() {
                    let mut next = Vec::new();
                    for (i, v) in queue.iter().enumerate() {
                        for r in self.lambda(&args[0], v, i, None)? {
                            let fresh = match &r {
                                Value::Node(Node { json: Some(j), .. }) => {
                                    seen_nodes.insert(*j as *const Json)
                                }
                                Value::Node(_) => true,
                                other => {
                                    system_values += 1;
                                    !out.iter().any(|o| same_item(o, other))
                                }
                            };
                            if fresh {
                                out.push(r.clone());
                                next.push(r);
                            }
                        }
                        if out.len() > MAX_ITEMS || system_values > MAX_REPEATED_VALUES {
                            return Err(err(f, "produced too many items"));
                        }
                    }
                    queue = next;
                }
                Ok(out)
            }
            "ofType" => {
                arity(f, args, 1, 1)?;
                let spec = self.type_arg(f, args)?;
                let mut out = Vec::new();
                for v in input {
                    if self.is_type_exact(&v, &spec)? {
                        out.push(v);
                    }
                }
                Ok(out)
            }
            "is" | "as" => {
                arity(f, args, 1, 1)?;
                let spec = self.type_arg(f, args)?;
                // R4's own invariants (dom-3) apply `as()` to whole collections; outside strict mode
                // it filters them like `ofType()`.
                if f == "as" && !self.env.strict && input.len() > 1 {
                    let mut out = Vec::new();
                    for v in input {
                        if self.is_type_exact(&v, &spec)? {
                            out.push(v);
                        }
                    }
                    return Ok(out);
                }
                match singleton_call(&input, f)? {
                    None => Ok(vec![]),
                    Some(v) => {
                        if f == "is" {
                            Ok(boolean(self.is_type(v, &spec)?))
                        } else {
                            Ok(if self.is_type_exact(v, &spec)? {
                                vec![v.clone()]
                            } else {
                                vec![]
                            })
                        }
                    }
                }
            }
            _ => Err(err(f, "unknown function")),
        }
    }
    /// Subsetting functions.
    #[inline(never)]
    fn call_subsetting(
        &self,
        f: &str,
        input: Collection<'a>,
        args: &[Expr],
        frame: &Frame<'_, 'a>,
    ) -> R<'a> {
        match f {
            "single" => {
                arity(f, args, 0, 0)?;
                if input.len() > 1 {
                    return Err(err(f, format!("input has {} items", input.len())));
                }
                Ok(input)
            }
            "first" => {
                arity(f, args, 0, 0)?;
                Ok(input.into_iter().take(1).collect())
            }
            "last" => {
                arity(f, args, 0, 0)?;
                Ok(input.into_iter().last().into_iter().collect())
            }
            "tail" => {
                arity(f, args, 0, 0)?;
                Ok(input.into_iter().skip(1).collect())
            }
            "skip" | "take" => {
                arity(f, args, 1, 1)?;
                let Some(n) = self.arg_integer(f, args, 0, frame)? else {
                    return Ok(vec![]);
                };
                let n = usize::try_from(n.max(0)).unwrap_or(0);
                Ok(if f == "skip" {
                    input.into_iter().skip(n).collect()
                } else {
                    input.into_iter().take(n).collect()
                })
            }
            "intersect" => {
                arity(f, args, 1, 1)?;
                let mut other = Distinct::default();
                for v in self.arg(f, args, 0, frame)? {
                    other.push(v);
                }
                let mut out = Distinct::default();
                for v in input {
                    if other.contains(&v) {
                        out.push(v);
                    }
                }
                Ok(out.items)
            }
            "exclude" => {
                arity(f, args, 1, 1)?;
                let mut other = Distinct::default();
                for v in self.arg(f, args, 0, frame)? {
                    other.push(v);
                }
                Ok(input.into_iter().filter(|v| !other.contains(v)).collect())
            }
            _ => Err(err(f, "unknown function")),
        }
    }
    /// Combining functions.
    #[inline(never)]
    fn call_combining(
        &self,
        f: &str,
        input: Collection<'a>,
        args: &[Expr],
        frame: &Frame<'_, 'a>,
    ) -> R<'a> {
        match f {
            "union" => {
                arity(f, args, 1, 1)?;
                let other = self.arg(f, args, 0, frame)?;
                self.apply_binary(BinOp::Union, input, other)
            }
            "combine" => {
                arity(f, args, 1, 1)?;
                let mut out = input;
                out.extend(self.arg(f, args, 0, frame)?);
                Ok(out)
            }
            _ => Err(err(f, "unknown function")),
        }
    }
    /// Conversion functions.
    #[inline(never)]
    fn call_conversion(
        &self,
        f: &str,
        input: Collection<'a>,
        args: &[Expr],
        frame: &Frame<'_, 'a>,
        has_target: bool,
    ) -> R<'a> {
        match f {
            "iif" => {
                arity(f, args, 2, 3)?;
                if input.len() > 1 {
                    return Err(err(f, "input must be at most one item"));
                }
                let iframe = if has_target {
                    Frame {
                        this: &input,
                        index: Some(0),
                        total: None,
                    }
                } else {
                    *frame
                };
                let c = self.eval(&args[0], &iframe)?;
                let cond = match c.as_slice() {
                    [] => false,
                    [v] => match v.system() {
                        Value::Boolean(b) => b,
                        o => {
                            return Err(err(
                                f,
                                format!("criterion must be a Boolean, got {}", o.type_name()),
                            ));
                        }
                    },
                    _ => return Err(err(f, "criterion must be a single Boolean")),
                };
                if cond {
                    self.eval(&args[1], &iframe)
                } else if let Some(e) = args.get(2) {
                    self.eval(e, &iframe)
                } else {
                    Ok(vec![])
                }
            }
            "toBoolean" | "convertsToBoolean" | "toInteger" | "convertsToInteger" | "toLong"
            | "convertsToLong" | "toDecimal" | "convertsToDecimal" | "toString"
            | "convertsToString" | "toDate" | "convertsToDate" | "toDateTime"
            | "convertsToDateTime" | "toTime" | "convertsToTime" | "toQuantity"
            | "convertsToQuantity" => {
                arity(f, args, 0, 1)?;
                let Some(v) = singleton_call(&input, f)? else {
                    return Ok(vec![]);
                };
                let unit = if args.is_empty() {
                    None
                } else {
                    self.arg_string(f, args, 0, frame)?
                };
                let (target, test) = match f.strip_prefix("convertsTo") {
                    Some(t) => (t, true),
                    None => (&f[2..], false),
                };
                let converted = convert(v, target, unit.as_deref());
                if test {
                    Ok(boolean(converted.is_some()))
                } else {
                    Ok(converted.into_iter().collect())
                }
            }
            _ => Err(err(f, "unknown function")),
        }
    }
    /// Strings functions.
    #[inline(never)]
    fn call_strings(
        &self,
        f: &str,
        input: Collection<'a>,
        args: &[Expr],
        frame: &Frame<'_, 'a>,
    ) -> R<'a> {
        match f {
            "indexOf" => {
                arity(f, args, 1, 1)?;
                let Some(s) = self.input_string(f, &input)? else {
                    return Ok(vec![]);
                };
                let Some(sub) = self.arg_string(f, args, 0, frame)? else {
                    return Ok(vec![]);
                };
                Ok(vec![Value::Integer(match s.find(&*sub) {
                    Some(b) => s[..b].chars().count() as i64,
                    None => -1,
                })])
            }
            "substring" => {
                arity(f, args, 1, 2)?;
                let Some(s) = self.input_string(f, &input)? else {
                    return Ok(vec![]);
                };
                let Some(start) = self.arg_integer(f, args, 0, frame)? else {
                    return Ok(vec![]);
                };
                let len = if args.len() > 1 {
                    self.arg_integer(f, args, 1, frame)?
                } else {
                    None
                };
                let chars: Vec<char> = s.chars().collect();
                if start < 0 || start as usize >= chars.len() {
                    return Ok(vec![]);
                }
                let start = start as usize;
                let end = match len {
                    Some(l) => start
                        .saturating_add(usize::try_from(l.max(0)).unwrap_or(0))
                        .min(chars.len()),
                    None => chars.len(),
                };
                Ok(vec![string(chars[start..end].iter().collect())])
            }
            "startsWith" | "endsWith" | "contains" => {
                arity(f, args, 1, 1)?;
                let Some(s) = self.input_string(f, &input)? else {
                    return Ok(vec![]);
                };
                let Some(sub) = self.arg_string(f, args, 0, frame)? else {
                    return Ok(vec![]);
                };
                Ok(boolean(match f {
                    "startsWith" => s.starts_with(&*sub),
                    "endsWith" => s.ends_with(&*sub),
                    _ => s.contains(&*sub),
                }))
            }
            "upper" | "lower" | "trim" | "length" | "toChars" => {
                arity(f, args, 0, 0)?;
                let Some(s) = self.input_string(f, &input)? else {
                    return Ok(vec![]);
                };
                Ok(match f {
                    "upper" => vec![string(s.to_uppercase())],
                    "lower" => vec![string(s.to_lowercase())],
                    "trim" => vec![string(s.trim().to_string())],
                    "length" => vec![Value::Integer(s.chars().count() as i64)],
                    _ => s.chars().map(|c| string(c.to_string())).collect(),
                })
            }
            "replace" => {
                arity(f, args, 2, 2)?;
                let Some(s) = self.input_string(f, &input)? else {
                    return Ok(vec![]);
                };
                let (Some(pat), Some(rep)) = (
                    self.arg_string(f, args, 0, frame)?,
                    self.arg_string(f, args, 1, frame)?,
                ) else {
                    return Ok(vec![]);
                };
                if pat.is_empty() {
                    if s.len().saturating_mul(rep.len() + 1) > MAX_STRING {
                        return Err(err(f, "result would be too long"));
                    }
                    let mut out = rep.to_string();
                    for c in s.chars() {
                        out.push(c);
                        out.push_str(&rep);
                    }
                    return Ok(vec![checked_string("replace()", out)?]);
                }
                if s.len().saturating_mul(rep.len().max(1)) > MAX_STRING * 4
                    && rep.len() > pat.len()
                {
                    return Err(err(f, "result would be too long"));
                }
                Ok(vec![checked_string("replace()", s.replace(&*pat, &rep))?])
            }
            "matches" | "matchesFull" => {
                arity(f, args, 1, 1)?;
                let Some(s) = self.input_string(f, &input)? else {
                    return Ok(vec![]);
                };
                let Some(pat) = self.arg_string(f, args, 0, frame)? else {
                    return Ok(vec![]);
                };
                let pat = if f == "matchesFull" {
                    Cow::Owned(format!("^(?:{pat})$"))
                } else {
                    pat
                };
                let re = regex(f, &pat)?;
                Ok(boolean(re.is_match(&s)))
            }
            "replaceMatches" => {
                arity(f, args, 2, 2)?;
                let Some(s) = self.input_string(f, &input)? else {
                    return Ok(vec![]);
                };
                let (Some(pat), Some(rep)) = (
                    self.arg_string(f, args, 0, frame)?,
                    self.arg_string(f, args, 1, frame)?,
                ) else {
                    return Ok(vec![]);
                };
                if pat.is_empty() {
                    return Ok(vec![string(s.into_owned())]);
                }
                let re = regex(f, &pat)?;
                if s.len().saturating_mul(rep.len() + 1) > MAX_STRING * 4 {
                    return Err(err(f, "result would be too long"));
                }
                Ok(vec![checked_string(
                    "replaceMatches()",
                    re.replace_all(&s, &*rep).into_owned(),
                )?])
            }
            "split" => {
                arity(f, args, 1, 1)?;
                let Some(s) = self.input_string(f, &input)? else {
                    return Ok(vec![]);
                };
                let Some(sep) = self.arg_string(f, args, 0, frame)? else {
                    return Ok(vec![]);
                };
                if sep.is_empty() {
                    return Ok(s.chars().map(|c| string(c.to_string())).collect());
                }
                Ok(s.split(&*sep).map(|p| string(p.to_string())).collect())
            }
            "join" => {
                arity(f, args, 0, 1)?;
                let sep = if args.is_empty() {
                    Cow::Borrowed("")
                } else {
                    self.arg_string(f, args, 0, frame)?.unwrap_or_default()
                };
                let mut parts = Vec::new();
                for v in &input {
                    match v.as_str() {
                        Some(s) => parts.push(s.into_owned()),
                        None => {
                            return Err(err(
                                f,
                                format!("items must be Strings, got {}", v.type_name()),
                            ));
                        }
                    }
                }
                Ok(vec![checked_string("join()", parts.join(&*sep))?])
            }
            "encode" | "decode" | "escape" | "unescape" => {
                arity(f, args, 1, 1)?;
                let Some(s) = self.input_string(f, &input)? else {
                    return Ok(vec![]);
                };
                let Some(fmt) = self.arg_string(f, args, 0, frame)? else {
                    return Ok(vec![]);
                };
                match codec(f, &s, &fmt)? {
                    Some(r) => Ok(vec![checked_string(f, r)?]),
                    None => Ok(vec![]),
                }
            }
            _ => Err(err(f, "unknown function")),
        }
    }
    /// Math functions.
    #[inline(never)]
    fn call_math(
        &self,
        f: &str,
        input: Collection<'a>,
        args: &[Expr],
        frame: &Frame<'_, 'a>,
    ) -> R<'a> {
        match f {
            "abs" | "ceiling" | "exp" | "floor" | "ln" | "sqrt" | "truncate" => {
                arity(f, args, 0, 0)?;
                let Some(v) = singleton_call(&input, f)? else {
                    return Ok(vec![]);
                };
                math1(f, &v.system())
            }
            "round" | "log" | "power" => {
                arity(f, args, if f == "round" { 0 } else { 1 }, 1)?;
                let Some(v) = singleton_call(&input, f)? else {
                    return Ok(vec![]);
                };
                let v = v.system();
                let arg = if args.is_empty() {
                    None
                } else {
                    self.arg_single(f, args, 0, frame)?
                };
                if !args.is_empty() && arg.is_none() {
                    return Ok(vec![]);
                }
                math2(f, &v, arg.as_ref())
            }
            _ => Err(err(f, "unknown function")),
        }
    }
    /// Tree navigation functions.
    #[inline(never)]
    fn call_tree_navigation(&self, f: &str, input: Collection<'a>, args: &[Expr]) -> R<'a> {
        match f {
            "children" => {
                arity(f, args, 0, 0)?;
                let mut out = Vec::new();
                for v in &input {
                    if let Value::Node(n) = v {
                        model::all_children(n, self.env.definitions, &self.steps, &mut out);
                    }
                }
                Ok(out)
            }
            "descendants" => {
                arity(f, args, 0, 0)?;
                // Breadth first: the queue, once every item in it has been expanded, is the result.
                let mut queue: Vec<Value<'a>> = Vec::new();
                for v in &input {
                    if let Value::Node(n) = v {
                        model::all_children(n, self.env.definitions, &self.steps, &mut queue);
                    }
                }
                let mut i = 0;
                while i < queue.len() {
                    if let Value::Node(n) = queue[i] {
                        model::all_children(&n, self.env.definitions, &self.steps, &mut queue);
                    }
                    if queue.len() > MAX_ITEMS {
                        return Err(err(f, "produced too many items"));
                    }
                    i += 1;
                }
                Ok(queue)
            }
            _ => Err(err(f, "unknown function")),
        }
    }
    /// Utility functions.
    #[inline(never)]
    fn call_utility(
        &self,
        f: &str,
        input: Collection<'a>,
        args: &[Expr],
        frame: &Frame<'_, 'a>,
    ) -> R<'a> {
        match f {
            "trace" => {
                arity(f, args, 1, 2)?;
                let label = self.arg_string(f, args, 0, frame)?.unwrap_or_default();
                let shown = match args.get(1) {
                    Some(p) => {
                        let mut out = Vec::new();
                        for (i, v) in input.iter().enumerate() {
                            out.extend(self.lambda(p, v, i, None)?);
                        }
                        out
                    }
                    None => input.clone(),
                };
                if let Some(t) = self.env.trace {
                    t(&label, &shown);
                }
                Ok(input)
            }
            "now" => {
                arity(f, args, 0, 0)?;
                Ok(vec![Value::Temporal(self.env.now())])
            }
            "today" => {
                arity(f, args, 0, 0)?;
                Ok(vec![Value::Temporal(
                    self.env
                        .now()
                        .with_precision(TemporalKind::Date, Precision::Day),
                )])
            }
            "timeOfDay" => {
                arity(f, args, 0, 0)?;
                let mut t = self.env.now();
                t.kind = TemporalKind::Time;
                t.tz = None;
                Ok(vec![Value::Temporal(t)])
            }
            "aggregate" => {
                arity(f, args, 1, 2)?;
                let mut total = if args.len() > 1 {
                    self.arg(f, args, 1, frame)?
                } else {
                    vec![]
                };
                for (i, v) in input.iter().enumerate() {
                    total = self.lambda(&args[0], v, i, Some(&total))?;
                }
                Ok(total)
            }
            "not" => {
                arity(f, args, 0, 0)?;
                Ok(to_bool(&input, "not()")?
                    .map(|b| boolean(!b))
                    .unwrap_or_default())
            }
            "type" => {
                arity(f, args, 0, 0)?;
                Ok(input.iter().map(|v| self.type_info(v)).collect())
            }
            "sort" => self.sort(input, args),
            "lowBoundary" | "highBoundary" | "precision" => {
                arity(f, args, 0, if f == "precision" { 0 } else { 1 })?;
                let Some(v) = singleton_call(&input, f)? else {
                    return Ok(vec![]);
                };
                let p = if args.is_empty() {
                    None
                } else {
                    self.arg_integer(f, args, 0, frame)?
                };
                if !args.is_empty() && p.is_none() {
                    return Ok(vec![]);
                }
                Ok(boundary(f, &v.system(), p).into_iter().collect())
            }
            "comparable" => {
                arity(f, args, 1, 1)?;
                let Some(v) = singleton(&input, "comparable()")? else {
                    return Ok(vec![]);
                };
                let Some(o) = self.arg_single(f, args, 0, frame)? else {
                    return Ok(vec![]);
                };
                match (value::as_quantity(v), value::as_quantity(&o)) {
                    (Some(a), Some(b)) => Ok(boolean(a.compare(&b).is_some())),
                    _ => Err(err(f, "input and argument must be Quantities")),
                }
            }
            _ => Err(err(f, "unknown function")),
        }
    }
    /// FHIR additions functions.
    #[inline(never)]
    fn call_fhir_additions(
        &self,
        f: &str,
        input: Collection<'a>,
        args: &[Expr],
        frame: &Frame<'_, 'a>,
    ) -> R<'a> {
        match f {
            "extension" => {
                arity(f, args, 1, 1)?;
                let Some(url) = self.arg_string(f, args, 0, frame)? else {
                    return Ok(vec![]);
                };
                let exts = self.members(&input, "extension")?;
                Ok(exts
                    .into_iter()
                    .filter(|e| match e {
                        Value::Node(n) => {
                            n.json.and_then(|j| j.get("url")).and_then(Json::as_str) == Some(&*url)
                        }
                        _ => false,
                    })
                    .collect())
            }
            "hasValue" => {
                arity(f, args, 0, 0)?;
                Ok(boolean(
                    matches!(input.as_slice(), [Value::Node(n)] if n.to_system().is_some()),
                ))
            }
            "getValue" => {
                arity(f, args, 0, 0)?;
                Ok(match input.as_slice() {
                    [Value::Node(n)] => n.to_system().into_iter().collect(),
                    _ => vec![],
                })
            }
            "resolve" => {
                arity(f, args, 0, 0)?;
                let mut out = Vec::new();
                for v in &input {
                    let reference = match v {
                        Value::Node(n) if n.json.is_some_and(Json::is_object) => n
                            .json
                            .and_then(|j| j.get("reference"))
                            .and_then(Json::as_str)
                            .map(str::to_string),
                        other => other.as_str().map(|s| s.into_owned()),
                    };
                    if let Some(r) = reference {
                        out.extend(self.resolve_reference(&r));
                    }
                }
                Ok(out)
            }
            "memberOf" => {
                arity(f, args, 1, 1)?;
                let Some(vs) = self.arg_string(f, args, 0, frame)? else {
                    return Ok(vec![]);
                };
                let Some(v) = singleton(&input, "memberOf()")? else {
                    return Ok(vec![]);
                };
                let Some(term) = self.env.terminology else {
                    return Err(err(f, "no terminology service is configured"));
                };
                let json = v.to_json();
                match term.member_of(&json, v.type_name(), &vs) {
                    Ok(Some(b)) => Ok(boolean(b)),
                    Ok(None) => Ok(vec![]),
                    Err(m) => Err(err(f, format!("value set '{vs}': {m}"))),
                }
            }
            "conformsTo" => {
                arity(f, args, 1, 1)?;
                let Some(url) = self.arg_string(f, args, 0, frame)? else {
                    return Ok(vec![]);
                };
                let Some(v) = singleton(&input, "conformsTo()")? else {
                    return Ok(vec![]);
                };
                if let Some(p) = self.env.profiles {
                    return match p.conforms_to(&v.to_json(), &url) {
                        Ok(b) => Ok(boolean(b)),
                        Err(m) => Err(err(f, format!("profile '{url}': {m}"))),
                    };
                }
                // Without a validator, core profiles reduce to a type test.
                match url.strip_prefix("http://hl7.org/fhir/StructureDefinition/") {
                    Some(t)
                        if self
                            .env
                            .definitions
                            .is_none_or(|d| d.structure(t).is_some()) =>
                    {
                        Ok(boolean(model::is_type(
                            v,
                            &TypeSpec {
                                namespace: None,
                                name: t.to_string(),
                            },
                            self.env.definitions,
                        )))
                    }
                    _ => Err(err(f, format!("unknown profile '{url}'"))),
                }
            }
            "htmlChecks" | "htmlchecks" => {
                arity(f, args, 0, 0)?;
                let Some(v) = singleton(&input, "htmlChecks()")? else {
                    return Ok(vec![]);
                };
                Ok(boolean(v.as_str().is_some_and(|s| html_checks(&s))))
            }
            "elementDefinition" | "slice" | "checkModifiers" | "subsumes" | "subsumedBy"
            | "defineVariable" => Err(err(f, "is not implemented by this engine")),
            _ => Err(err(f, "unknown function")),
        }
    }

    fn type_info(&self, v: &Value<'a>) -> Value<'a> {
        match v {
            Value::Node(n) => {
                let name =
                    n.ty.map(str::to_string)
                        .unwrap_or_else(|| v.type_name().to_string());
                Value::TypeInfo {
                    namespace: "FHIR",
                    name: Cow::Owned(name),
                }
            }
            other => Value::TypeInfo {
                namespace: "System",
                name: Cow::Owned(other.type_name().to_string()),
            },
        }
    }

    fn sort(&self, input: Collection<'a>, args: &[Expr]) -> R<'a> {
        let mut keyed: Vec<(Vec<Collection<'a>>, Value<'a>)> = Vec::with_capacity(input.len());
        let mut desc = Vec::new();
        for a in args {
            desc.push(matches!(a, Expr::Unary { negate: true, .. }));
        }
        for (i, v) in input.into_iter().enumerate() {
            let mut keys = Vec::new();
            for a in args {
                let e = match a {
                    Expr::Unary {
                        negate: true,
                        operand,
                    } => operand.as_ref(),
                    e => e,
                };
                keys.push(self.lambda(e, &v, i, None)?);
            }
            keyed.push((keys, v));
        }
        let mut failure = None;
        let cmp_items = |a: &Value, b: &Value, failure: &mut Option<String>| -> Ordering {
            match value::compare(a, b) {
                Ok(Some(o)) => o,
                Ok(None) => Ordering::Equal,
                Err(m) => {
                    *failure = Some(m);
                    Ordering::Equal
                }
            }
        };
        keyed.sort_by(|(ka, va), (kb, vb)| {
            if args.is_empty() {
                return cmp_items(va, vb, &mut failure);
            }
            for (i, (a, b)) in ka.iter().zip(kb).enumerate() {
                // Empty keys sort first in either direction.
                let o = match (a.first(), b.first()) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (Some(x), Some(y)) => {
                        let o = cmp_items(x, y, &mut failure);
                        if desc[i] { o.reverse() } else { o }
                    }
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
        if let Some(m) = failure {
            return Err(err("sort", m));
        }
        Ok(keyed.into_iter().map(|(_, v)| v).collect())
    }

    /// Finds the resource a reference points at: contained (`#id`), a Bundle entry, or the hook.
    fn resolve_reference(&self, r: &str) -> Option<Value<'a>> {
        let defs = self.env.definitions;
        let roots = [self.env.resource.as_ref(), self.env.root_resource.as_ref()];
        if let Some(id) = r.strip_prefix('#') {
            for root in roots.into_iter().flatten() {
                if let Value::Node(Node { json: Some(j), .. }) = root {
                    for c in j
                        .get("contained")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if c.get("id").and_then(Json::as_str) == Some(id) {
                            return Some(Value::Node(model::resource_node(c, defs)));
                        }
                    }
                }
            }
            return None;
        }
        for root in roots.into_iter().flatten() {
            if let Value::Node(Node { json: Some(j), .. }) = root {
                for e in j
                    .get("entry")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    let full = e.get("fullUrl").and_then(Json::as_str).unwrap_or("");
                    let res = e.get("resource");
                    let typed = res.and_then(|x| {
                        Some(format!(
                            "{}/{}",
                            x.get("resourceType")?.as_str()?,
                            x.get("id")?.as_str()?
                        ))
                    });
                    if (full == r
                        || (!full.is_empty() && full.ends_with(&format!("/{r}")))
                        || typed.as_deref() == Some(r))
                        && let Some(x) = res
                    {
                        return Some(Value::Node(model::resource_node(x, defs)));
                    }
                }
            }
        }
        let json = self.env.resolver?.resolve(r)?;
        Some(Value::Node(model::resource_node(json, defs)))
    }
}

/// Identity for `repeat()`: the same JSON node, or equal System values.
fn same_item(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Node(x), Value::Node(y)) => match (x.json, y.json) {
            (Some(p), Some(q)) => std::ptr::eq(p, q),
            _ => false,
        },
        (Value::Node(_), _) | (_, Value::Node(_)) => false,
        _ => value::equals(a, b) == Some(true),
    }
}

/// Compiles a pattern, reusing this thread's recent compilations (invariants use a handful of
/// patterns over and over; compiling dominates matching). The cache hands out shared handles:
/// cloning a `Regex` would give it a fresh matching cache, and building that cache (lazy DFA
/// tables) costs more than a typical match.
fn regex(f: &str, pat: &str) -> Result<std::rc::Rc<regex::Regex>, EvalError> {
    thread_local! {
        static CACHE: std::cell::RefCell<HashMap<String, std::rc::Rc<regex::Regex>>> =
            std::cell::RefCell::new(HashMap::new());
    }
    if let Some(re) = CACHE.with(|c| c.borrow().get(pat).cloned()) {
        return Ok(re);
    }
    let re = regex::RegexBuilder::new(pat)
        .dot_matches_new_line(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| err(f, format!("invalid regular expression: {e}")))?;
    let re = std::rc::Rc::new(re);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 256 {
            c.clear();
        }
        c.insert(pat.to_string(), re.clone());
    });
    Ok(re)
}

fn convert<'a>(v: &Value<'a>, target: &str, unit: Option<&str>) -> Option<Value<'a>> {
    let v = v.system();
    match target {
        "Boolean" => match &v {
            Value::Boolean(b) => Some(Value::Boolean(*b)),
            Value::Integer(1) => Some(Value::Boolean(true)),
            Value::Integer(0) => Some(Value::Boolean(false)),
            Value::Decimal(d) if *d == Decimal::ONE => Some(Value::Boolean(true)),
            Value::Decimal(d) if d.is_zero() => Some(Value::Boolean(false)),
            Value::String(s) => match s.to_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(Value::Boolean(true)),
                "false" | "f" | "no" | "n" | "0" | "0.0" => Some(Value::Boolean(false)),
                _ => None,
            },
            _ => None,
        },
        "Integer" | "Long" => {
            let i = match &v {
                Value::Integer(i) | Value::Long(i) => Some(*i),
                Value::Boolean(b) => Some(i64::from(*b)),
                Value::String(s) => {
                    let t = s.strip_prefix('+').unwrap_or(s);
                    let digits = t.strip_prefix('-').unwrap_or(t);
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                        t.parse().ok()
                    } else {
                        None
                    }
                }
                _ => None,
            }?;
            Some(if target == "Long" {
                Value::Long(i)
            } else {
                Value::Integer(i)
            })
        }
        "Decimal" => match &v {
            Value::Integer(i) | Value::Long(i) => Some(Value::Decimal(Decimal::from(*i))),
            Value::Decimal(d) => Some(Value::Decimal(*d)),
            Value::Boolean(b) => Some(Value::Decimal(if *b {
                Decimal::ONE
            } else {
                Decimal::ZERO
            })),
            Value::String(s) => {
                let t = s.strip_prefix(['+', '-']).unwrap_or(s);
                let ok = !t.is_empty()
                    && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    && t.bytes().filter(|b| *b == b'.').count() <= 1
                    && !t.starts_with('.')
                    && !t.ends_with('.');
                if ok {
                    parse_decimal(s).map(Value::Decimal)
                } else {
                    None
                }
            }
            _ => None,
        },
        "String" => to_string_value(&v).map(string),
        "Date" => match &v {
            Value::Temporal(t) if t.kind != TemporalKind::Time => Some(Value::Temporal(
                t.with_precision(TemporalKind::Date, Precision::Day),
            )),
            Value::String(s) => Temporal::parse_date_time(s)
                .filter(|t| t.kind == TemporalKind::Date || !s.contains('T'))
                .map(Value::Temporal),
            _ => None,
        },
        "DateTime" => match &v {
            Value::Temporal(t) if t.kind != TemporalKind::Time => {
                let mut t = *t;
                t.kind = TemporalKind::DateTime;
                Some(Value::Temporal(t))
            }
            Value::String(s) => Temporal::parse_date_time(s).map(|mut t| {
                t.kind = TemporalKind::DateTime;
                Value::Temporal(t)
            }),
            _ => None,
        },
        "Time" => match &v {
            Value::Temporal(t) if t.kind == TemporalKind::Time => Some(Value::Temporal(*t)),
            Value::String(s) => {
                Temporal::parse_time(s.strip_prefix('T').unwrap_or(s)).map(Value::Temporal)
            }
            _ => None,
        },
        "Quantity" => {
            let q = match &v {
                Value::Integer(i) | Value::Long(i) => Some(Quantity {
                    value: Decimal::from(*i),
                    unit: "1".into(),
                }),
                Value::Decimal(d) => Some(Quantity {
                    value: *d,
                    unit: "1".into(),
                }),
                Value::Quantity(q) => Some(q.clone()),
                Value::Boolean(b) => Some(Quantity {
                    value: if *b { Decimal::ONE } else { Decimal::ZERO },
                    unit: "1".into(),
                }),
                Value::String(s) => parse_quantity_string(s),
                Value::Node(n) => n.to_quantity(),
                _ => None,
            }?;
            match unit {
                Some(u) => q.convert_to(u).map(Value::Quantity),
                None => Some(Value::Quantity(q)),
            }
        }
        _ => None,
    }
}

/// `'5.5 \'mg\''`, `'4 days'`, `'10'` as a quantity.
fn parse_quantity_string(s: &str) -> Option<Quantity> {
    let s = s.trim();
    let (num, rest) = match s.find(' ') {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let t = num.strip_prefix(['+', '-']).unwrap_or(num);
    if t.is_empty()
        || !t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || t.starts_with('.')
        || t.ends_with('.')
    {
        return None;
    }
    let value = parse_decimal(num)?;
    let unit = if rest.is_empty() {
        "1".to_string()
    } else if let Some(u) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        u.to_string()
    } else if is_calendar_unit(rest) {
        singular_calendar(rest).to_string()
    } else {
        return None;
    };
    Some(Quantity { value, unit })
}

fn math1<'a>(f: &str, v: &Value<'a>) -> R<'a> {
    let d = match v {
        Value::Integer(i) | Value::Long(i) => {
            return Ok(match f {
                "abs" => i.checked_abs().map(Value::Integer),
                "ceiling" | "floor" | "truncate" => Some(Value::Integer(*i)),
                _ => math_dec(f, Decimal::from(*i)).map(Value::Decimal),
            }
            .into_iter()
            .collect());
        }
        Value::Decimal(d) => *d,
        Value::Quantity(q) if f == "abs" => {
            return Ok(vec![Value::Quantity(Quantity {
                value: q.value.abs(),
                unit: q.unit.clone(),
            })]);
        }
        o => {
            return Err(err(
                f,
                format!("input must be a number, got {}", o.type_name()),
            ));
        }
    };
    Ok(match f {
        "ceiling" | "floor" | "truncate" => {
            let r = match f {
                "ceiling" => d.ceil(),
                "floor" => d.floor(),
                _ => d.trunc(),
            };
            r.to_i64().map(Value::Integer)
        }
        _ => math_dec(f, d).map(Value::Decimal),
    }
    .into_iter()
    .collect())
}

fn math_dec(f: &str, d: Decimal) -> Option<Decimal> {
    match f {
        "abs" => Some(d.abs()),
        "exp" => d.checked_exp().map(|r| r.round_dp(20).normalize()),
        "ln" => (d > Decimal::ZERO)
            .then(|| d.checked_ln())
            .flatten()
            .map(|r| r.round_dp(20).normalize()),
        "sqrt" => d.sqrt().map(|r| r.round_dp(20).normalize()),
        _ => None,
    }
}

fn math2<'a>(f: &str, v: &Value<'a>, arg: Option<&Value<'a>>) -> R<'a> {
    let num = |v: &Value| match v {
        Value::Integer(i) | Value::Long(i) => Some(Decimal::from(*i)),
        Value::Decimal(d) => Some(*d),
        _ => None,
    };
    let Some(x) = num(v) else {
        return Err(err(
            f,
            format!("input must be a number, got {}", v.type_name()),
        ));
    };
    match f {
        "round" => {
            let p = match arg {
                None => 0,
                Some(Value::Integer(p)) if *p >= 0 => *p,
                Some(_) => return Err(err(f, "precision must be a non-negative Integer")),
            };
            Ok(vec![Value::Decimal(x.round_dp_with_strategy(
                p.min(28) as u32,
                RoundingStrategy::MidpointAwayFromZero,
            ))])
        }
        "log" => {
            let Some(base) = arg.and_then(num) else {
                return Err(err(f, "base must be a number"));
            };
            if x <= Decimal::ZERO || base <= Decimal::ZERO || base == Decimal::ONE {
                return Ok(vec![]);
            }
            let r = x
                .checked_ln()
                .zip(base.checked_ln())
                .and_then(|(a, b)| a.checked_div(b));
            Ok(r.map(|d| Value::Decimal(d.round_dp(16).normalize()))
                .into_iter()
                .collect())
        }
        _ => {
            let Some(e) = arg else { return Ok(vec![]) };
            if let (Value::Integer(b), Value::Integer(p)) = (v, e)
                && *p >= 0
            {
                return Ok(u32::try_from(*p)
                    .ok()
                    .and_then(|p| b.checked_pow(p))
                    .map(Value::Integer)
                    .into_iter()
                    .collect());
            }
            let Some(p) = num(e) else {
                return Err(err(f, "exponent must be a number"));
            };
            if x.is_sign_negative() && p.fract() != Decimal::ZERO {
                return Ok(vec![]);
            }
            Ok(x.checked_powd(p)
                .map(|d| Value::Decimal(d.normalize()))
                .into_iter()
                .collect())
        }
    }
}

fn boundary<'a>(f: &str, v: &Value<'a>, p: Option<i64>) -> Option<Value<'a>> {
    match v {
        Value::Integer(_) | Value::Long(_) | Value::Decimal(_) => {
            let d = match v {
                Value::Decimal(d) => *d,
                Value::Integer(i) | Value::Long(i) => Decimal::from(*i),
                _ => return None,
            };
            if f == "precision" {
                return Some(Value::Integer(i64::from(d.scale())));
            }
            decimal_boundary(d, f == "highBoundary", p).map(Value::Decimal)
        }
        Value::Quantity(q) => {
            if f == "precision" {
                return Some(Value::Integer(i64::from(q.value.scale())));
            }
            decimal_boundary(q.value, f == "highBoundary", p).map(|value| {
                Value::Quantity(Quantity {
                    value,
                    unit: q.unit.clone(),
                })
            })
        }
        Value::Temporal(t) => {
            let digits = |p: Precision| -> i64 {
                match (t.kind, p) {
                    (TemporalKind::Time, Precision::Hour) => 2,
                    (TemporalKind::Time, Precision::Minute) => 4,
                    (TemporalKind::Time, Precision::Second) => 6,
                    (TemporalKind::Time, _) => 9,
                    (_, Precision::Year) => 4,
                    (_, Precision::Month) => 6,
                    (_, Precision::Day) => 8,
                    (_, Precision::Hour) => 10,
                    (_, Precision::Minute) => 12,
                    (_, Precision::Second) => 14,
                    (_, Precision::Millisecond) => 17,
                }
            };
            if f == "precision" {
                return Some(Value::Integer(digits(t.precision)));
            }
            temporal_boundary(t, f == "highBoundary", p).map(Value::Temporal)
        }
        _ => None,
    }
}

fn decimal_boundary(d: Decimal, high: bool, p: Option<i64>) -> Option<Decimal> {
    let p = p.unwrap_or(8);
    if !(0..=28).contains(&p) {
        return None;
    }
    let p = p as u32;
    let scale = d.scale();
    // Half a unit in the last place the value states. A value stating all 28 places the decimal
    // type holds has no representable half unit, and one at the type's limit no representable
    // widening: no boundary (empty) rather than a wrong one or a panic.
    let half = Decimal::try_new(5, scale + 1).ok()?;
    let neg = d.is_sign_negative();
    let widened = if high {
        d.checked_add(half)?
    } else {
        d.checked_sub(half)?
    };
    let unit = Decimal::new(1, p);
    // A value entirely below the requested precision has boundaries of zero at that precision.
    if p < scale && d.abs().checked_add(half)? < unit && !d.is_zero() {
        let mut z = Decimal::ZERO;
        z.rescale(p);
        if neg && !high {
            z.set_sign_negative(true);
        }
        return Some(z);
    }
    let strategy = if high {
        RoundingStrategy::ToPositiveInfinity
    } else {
        RoundingStrategy::ToNegativeInfinity
    };
    let mut r = widened.round_dp_with_strategy(p, strategy);
    r.rescale(p);
    Some(r)
}

fn temporal_boundary(t: &Temporal, high: bool, p: Option<i64>) -> Option<Temporal> {
    let (prec, kind) = match (t.kind, p) {
        (TemporalKind::Time, None | Some(9)) => (Precision::Millisecond, TemporalKind::Time),
        (TemporalKind::Time, Some(2)) => (Precision::Hour, TemporalKind::Time),
        (TemporalKind::Time, Some(4)) => (Precision::Minute, TemporalKind::Time),
        (TemporalKind::Time, Some(6)) => (Precision::Second, TemporalKind::Time),
        (TemporalKind::Time, _) => return None,
        (k, Some(4)) => (Precision::Year, k),
        (k, Some(6)) => (Precision::Month, k),
        (k, Some(8)) => (Precision::Day, k),
        (TemporalKind::Date, None) => (Precision::Day, TemporalKind::Date),
        (TemporalKind::DateTime, None | Some(17)) => {
            (Precision::Millisecond, TemporalKind::DateTime)
        }
        (TemporalKind::DateTime, Some(10)) => (Precision::Hour, TemporalKind::DateTime),
        (TemporalKind::DateTime, Some(12)) => (Precision::Minute, TemporalKind::DateTime),
        (TemporalKind::DateTime, Some(14)) => (Precision::Second, TemporalKind::DateTime),
        (TemporalKind::Date, Some(17 | 10 | 12 | 14)) => {
            let mut u = *t;
            u.kind = TemporalKind::DateTime;
            return temporal_boundary(&u, high, p);
        }
        _ => return None,
    };
    let mut r = *t;
    // An hour-only time of day is read as `hh:00` before widening.
    let known = if t.precision == Precision::Hour {
        Precision::Minute
    } else {
        t.precision
    };
    if known < Precision::Month {
        r.month = if high { 12 } else { 1 };
    }
    if known < Precision::Day {
        r.day = if high { days_in(r.year, r.month) } else { 1 };
    }
    if known < Precision::Hour {
        r.hour = if high { 23 } else { 0 };
    }
    if known < Precision::Minute {
        r.minute = if high { 59 } else { 0 };
    }
    if known < Precision::Second {
        r.second = if high { 59 } else { 0 };
    }
    if known < Precision::Millisecond {
        r.millis = if high { 999 } else { 0 };
    }
    r.kind = kind;
    r.precision = prec;
    if kind == TemporalKind::DateTime && prec >= Precision::Hour && r.tz.is_none() {
        r.tz = Some(if high { -720 } else { 840 });
    }
    if kind == TemporalKind::Date {
        r.tz = None;
    }
    Some(r)
}

fn days_in(year: i32, month: u8) -> u8 {
    let probe = Temporal::parse_date_time(&format!("{year:04}-{month:02}-01"));
    match probe
        .and_then(|t| t.add(Decimal::ONE, "month"))
        .and_then(|t| t.add(Decimal::from(-1), "day"))
    {
        Some(t) => t.day,
        None => 28,
    }
}

fn codec(f: &str, s: &str, fmt: &str) -> Result<Option<String>, EvalError> {
    Ok(match (f, fmt) {
        ("encode", "hex") => Some(s.bytes().map(|b| format!("{b:02x}")).collect()),
        ("decode", "hex") => {
            if !s.len().is_multiple_of(2) {
                return Ok(None);
            }
            let bytes: Option<Vec<u8>> = (0..s.len())
                .step_by(2)
                .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect();
            bytes.and_then(|b| String::from_utf8(b).ok())
        }
        ("encode", "base64") => Some(base64_encode(s.as_bytes(), false)),
        ("encode", "urlbase64") => Some(base64_encode(s.as_bytes(), true)),
        ("decode", "base64") | ("decode", "urlbase64") => {
            base64_decode(s).and_then(|b| String::from_utf8(b).ok())
        }
        ("escape", "html") => Some(
            s.chars()
                .map(|c| match c {
                    '<' => "&lt;".to_string(),
                    '>' => "&gt;".to_string(),
                    '&' => "&amp;".to_string(),
                    '"' => "&quot;".to_string(),
                    '\'' => "&#39;".to_string(),
                    c => c.to_string(),
                })
                .collect(),
        ),
        ("unescape", "html") => Some(
            s.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        ),
        ("escape", "json") => {
            let j = Json::String(s.to_string()).to_string();
            Some(j[1..j.len() - 1].to_string())
        }
        ("unescape", "json") => Some(json_unescape(s)),
        _ => return Err(err(f, format!("unknown format '{fmt}'"))),
    })
}

/// Resolves JSON string escapes, leaving other text as it is.
fn json_unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(
                    u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .unwrap_or('\u{fffd}'),
                );
            }
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8], url: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let mut c = B64[((n >> (18 - 6 * i)) & 63) as usize] as char;
                if url {
                    c = match c {
                        '+' => '-',
                        '/' => '_',
                        c => c,
                    };
                }
                out.push(c);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => continue,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

/// The narrative rules of `htmlChecks()`: no active content (scripts, forms, event handlers,
/// frames), as the FHIR narrative rules require.
fn html_checks(s: &str) -> bool {
    let lower = s.to_lowercase();
    const BANNED: [&str; 9] = [
        "<script",
        "<form",
        "<iframe",
        "<object",
        "<embed",
        "<applet",
        "<base",
        "<link",
        "javascript:",
    ];
    if BANNED.iter().any(|b| lower.contains(b)) {
        return false;
    }
    // Event handler attributes: ` on...=`.
    let bytes = lower.as_bytes();
    for i in 0..bytes.len().saturating_sub(3) {
        if bytes[i].is_ascii_whitespace() && bytes[i + 1] == b'o' && bytes[i + 2] == b'n' {
            let rest = &lower[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            if name_len > 0
                && rest[name_len..].trim_start().starts_with('=')
                && lower[..i].rfind('<') > lower[..i].rfind('>')
            {
                return false;
            }
        }
    }
    lower.trim_start().starts_with("<div")
}
