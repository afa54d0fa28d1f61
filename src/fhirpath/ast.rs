//! The syntax tree a parsed expression is evaluated from. Immutable and `Send + Sync`, so one parse
//! can be cached and evaluated by many threads.

use super::datetime::Temporal;
use super::error::Pos;
use super::quantity::Quantity;
use rust_decimal::Decimal;

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `{}`
    Empty,
    Boolean(bool),
    String(String),
    Integer(i64),
    Long(i64),
    Decimal(Decimal),
    Temporal(Temporal),
    Quantity(Quantity),
}

/// Binary operators, by the spec's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Equiv,
    Ne,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::IntDiv => "div",
            BinOp::Mod => "mod",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Concat => "&",
            BinOp::Union => "|",
            BinOp::Lt => "<",
            BinOp::Gt => ">",
            BinOp::Le => "<=",
            BinOp::Ge => ">=",
            BinOp::Eq => "=",
            BinOp::Equiv => "~",
            BinOp::Ne => "!=",
            BinOp::NotEquiv => "!~",
            BinOp::In => "in",
            BinOp::Contains => "contains",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Xor => "xor",
            BinOp::Implies => "implies",
        }
    }
}

/// A type name as written in `is`/`as`/`ofType`: an optional namespace (`FHIR`, `System`) and a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSpec {
    pub namespace: Option<String>,
    pub name: String,
}

/// An expression node.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Literal),
    /// `$this`
    This,
    /// `$index`
    Index,
    /// `$total`
    Total,
    /// `%name`
    External(String),
    /// A member name: on the input collection (`target` absent) or on `target`'s result.
    Member {
        target: Option<Box<Expr>>,
        name: String,
        pos: Pos,
    },
    /// A function call, on the input collection (`target` absent) or on `target`'s result.
    Call {
        target: Option<Box<Expr>>,
        name: String,
        args: Vec<Expr>,
        pos: Pos,
    },
    /// `target[index]`
    Indexer(Box<Expr>, Box<Expr>),
    /// Unary `-` (`negate` true) or `+`.
    Unary {
        negate: bool,
        operand: Box<Expr>,
    },
    Binary {
        op: BinOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `expr is Type`
    Is(Box<Expr>, TypeSpec),
    /// `expr as Type`
    As(Box<Expr>, TypeSpec),
}

impl Expr {
    /// The type name an argument like `ofType(FHIR.Patient)` denotes, when it is a bare (qualified) name.
    pub fn as_type_spec(&self) -> Option<TypeSpec> {
        match self {
            Expr::Member {
                target: None, name, ..
            } => Some(TypeSpec {
                namespace: None,
                name: name.clone(),
            }),
            Expr::Member {
                target: Some(t),
                name,
                ..
            } => match t.as_ref() {
                Expr::Member {
                    target: None,
                    name: ns,
                    ..
                } => Some(TypeSpec {
                    namespace: Some(ns.clone()),
                    name: name.clone(),
                }),
                _ => None,
            },
            _ => None,
        }
    }
}
