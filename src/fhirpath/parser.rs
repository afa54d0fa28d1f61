//! Recursive-descent parser for FHIRPath N1 with the spec's operator precedence (lowest first):
//! `implies`; `or xor`; `and`; `in contains`; `= ~ != !~`; `< > <= >=`; `|`; `is as`; `+ - &`;
//! `* / div mod`; unary `+ -`; then `.`, `[]` and terms.

use super::ast::{BinOp, Expr, Literal, TypeSpec};
use super::datetime::Temporal;
use super::error::{Pos, SyntaxError};
use super::lexer::{Tok, Token, tokenize};
use super::quantity::{Quantity, is_calendar_unit, singular_calendar};
use super::value::parse_decimal;

/// How deeply expressions may nest before the parser refuses (protects the stack).
pub const MAX_DEPTH: usize = 64;

/// Parses a whole expression.
pub fn parse(src: &str) -> Result<Expr, SyntaxError> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        tokens,
        i: 0,
        depth: 0,
    };
    let e = p.expression()?;
    let t = p.peek();
    if t.tok != Tok::Eof {
        return Err(
            SyntaxError::new(t.pos, "an operator or the end of the expression")
                .found(&describe(&t.tok)),
        );
    }
    Ok(e)
}

struct Parser {
    tokens: Vec<Token>,
    i: usize,
    depth: usize,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident { name, .. } => format!("identifier '{name}'"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Number { text, .. } => format!("number {text}"),
        Tok::DateTime(s) => format!("@{s}"),
        Tok::External(s) => format!("%{s}"),
        Tok::Special(s) => format!("${s}"),
        Tok::Sym(s) => format!("'{s}'"),
        Tok::Eof => "end of input".to_string(),
    }
}

fn keyword_op(t: &Tok) -> Option<BinOp> {
    let Tok::Ident {
        name,
        delimited: false,
    } = t
    else {
        return None;
    };
    Some(match name.as_str() {
        "div" => BinOp::IntDiv,
        "mod" => BinOp::Mod,
        "in" => BinOp::In,
        "contains" => BinOp::Contains,
        "and" => BinOp::And,
        "or" => BinOp::Or,
        "xor" => BinOp::Xor,
        "implies" => BinOp::Implies,
        _ => return None,
    })
}

fn sym_op(t: &Tok) -> Option<BinOp> {
    let Tok::Sym(s) = t else { return None };
    Some(match *s {
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "&" => BinOp::Concat,
        "|" => BinOp::Union,
        "<" => BinOp::Lt,
        ">" => BinOp::Gt,
        "<=" => BinOp::Le,
        ">=" => BinOp::Ge,
        "=" => BinOp::Eq,
        "~" => BinOp::Equiv,
        "!=" => BinOp::Ne,
        "!~" => BinOp::NotEquiv,
        _ => return None,
    })
}

/// Precedence levels from lowest (0) to highest binary (8); `is`/`as` sit at level 7.
fn level(op: BinOp) -> u8 {
    match op {
        BinOp::Implies => 0,
        BinOp::Or | BinOp::Xor => 1,
        BinOp::And => 2,
        BinOp::In | BinOp::Contains => 3,
        BinOp::Eq | BinOp::Equiv | BinOp::Ne | BinOp::NotEquiv => 4,
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => 5,
        BinOp::Union => 6,
        BinOp::Add | BinOp::Sub | BinOp::Concat => 8,
        BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => 9,
    }
}

const TYPE_LEVEL: u8 = 7;

impl Parser {
    fn peek(&self) -> Token {
        self.tokens.get(self.i).cloned().unwrap_or(Token {
            tok: Tok::Eof,
            pos: Pos::default(),
        })
    }
    fn peek_tok(&self) -> &Tok {
        self.tokens.get(self.i).map(|t| &t.tok).unwrap_or(&Tok::Eof)
    }
    fn advance(&mut self) -> Token {
        let t = self.peek();
        if self.i < self.tokens.len() {
            self.i += 1;
        }
        t
    }
    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek_tok(), Tok::Sym(x) if *x == s)
    }
    fn expect_sym(&mut self, s: &str) -> Result<(), SyntaxError> {
        if self.is_sym(s) {
            self.advance();
            Ok(())
        } else {
            let t = self.peek();
            Err(SyntaxError::new(t.pos, &format!("'{s}'")).found(&describe(&t.tok)))
        }
    }

    /// Counts one more level of the tree under construction; the tree's depth never exceeds
    /// [`MAX_DEPTH`], so evaluating and dropping it cannot exhaust the stack.
    fn deeper(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let t = self.peek();
            return Err(SyntaxError::new(
                t.pos,
                &format!("an expression nested at most {MAX_DEPTH} deep"),
            ));
        }
        Ok(())
    }

    fn expression(&mut self) -> Result<Expr, SyntaxError> {
        let base = self.depth;
        self.deeper()?;
        let r = self.binary(0);
        self.depth = base;
        r
    }

    fn binary(&mut self, min: u8) -> Result<Expr, SyntaxError> {
        let base = self.depth;
        let r = self.binary_chain(min);
        self.depth = base;
        r
    }

    fn binary_chain(&mut self, min: u8) -> Result<Expr, SyntaxError> {
        let mut left = self.unary()?;
        loop {
            let tok = self.peek_tok().clone();
            if let Tok::Ident {
                name,
                delimited: false,
            } = &tok
                && (name == "is" || name == "as")
                && TYPE_LEVEL >= min
            {
                self.advance();
                self.deeper()?;
                let spec = self.type_spec()?;
                left = if name == "is" {
                    Expr::Is(Box::new(left), spec)
                } else {
                    Expr::As(Box::new(left), spec)
                };
                continue;
            }
            let Some(op) = sym_op(&tok).or_else(|| keyword_op(&tok)) else {
                break;
            };
            let l = level(op);
            if l < min {
                break;
            }
            self.advance();
            self.deeper()?;
            let right = self.binary(l + 1)?;
            left = Expr::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
        }
        Ok(left)
    }

    fn type_spec(&mut self) -> Result<TypeSpec, SyntaxError> {
        let first = self.identifier("a type name")?;
        if self.is_sym(".") {
            self.advance();
            let name = self.identifier("a type name after the namespace")?;
            return Ok(TypeSpec {
                namespace: Some(first),
                name,
            });
        }
        Ok(TypeSpec {
            namespace: None,
            name: first,
        })
    }

    fn identifier(&mut self, what: &str) -> Result<String, SyntaxError> {
        let t = self.advance();
        match t.tok {
            Tok::Ident { name, .. } => Ok(name),
            other => Err(SyntaxError::new(t.pos, what).found(&describe(&other))),
        }
    }

    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        if self.is_sym("-") || self.is_sym("+") {
            let negate = self.is_sym("-");
            self.advance();
            let base = self.depth;
            self.deeper()?;
            let operand = self.unary();
            self.depth = base;
            return Ok(Expr::Unary {
                negate,
                operand: Box::new(operand?),
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, SyntaxError> {
        let base = self.depth;
        let r = self.postfix_chain();
        self.depth = base;
        r
    }

    fn postfix_chain(&mut self) -> Result<Expr, SyntaxError> {
        let mut e = self.term()?;
        loop {
            if self.is_sym(".") || self.is_sym("[") {
                self.deeper()?;
            }
            if self.is_sym(".") {
                self.advance();
                let t = self.advance();
                let name = match t.tok {
                    Tok::Ident { name, .. } => name,
                    other => {
                        return Err(
                            SyntaxError::new(t.pos, "a member or function name after '.'")
                                .found(&describe(&other)),
                        );
                    }
                };
                e = self.member_or_call(Some(Box::new(e)), name, t.pos)?;
            } else if self.is_sym("[") {
                self.advance();
                let idx = self.expression()?;
                self.expect_sym("]")?;
                e = Expr::Indexer(Box::new(e), Box::new(idx));
            } else {
                return Ok(e);
            }
        }
    }

    fn member_or_call(
        &mut self,
        target: Option<Box<Expr>>,
        name: String,
        pos: Pos,
    ) -> Result<Expr, SyntaxError> {
        if !self.is_sym("(") {
            return Ok(Expr::Member { target, name, pos });
        }
        self.advance();
        let mut args = Vec::new();
        if !self.is_sym(")") {
            loop {
                args.push(self.expression()?);
                if self.is_sym(",") {
                    self.advance();
                    continue;
                }
                break;
            }
        }
        self.expect_sym(")")?;
        Ok(Expr::Call {
            target,
            name,
            args,
            pos,
        })
    }

    fn term(&mut self) -> Result<Expr, SyntaxError> {
        let t = self.advance();
        match t.tok {
            Tok::Sym("(") => {
                let e = self.expression()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Sym("{") => {
                self.expect_sym("}")?;
                Ok(Expr::Literal(Literal::Empty))
            }
            Tok::Str(s) => Ok(Expr::Literal(Literal::String(s))),
            Tok::Number { text, long } => self.number(&text, long, t.pos),
            Tok::DateTime(s) => datetime_literal(&s, t.pos).map(Expr::Literal),
            Tok::External(name) => Ok(Expr::External(name)),
            Tok::Special(name) => Ok(match name.as_str() {
                "this" => Expr::This,
                "index" => Expr::Index,
                _ => Expr::Total,
            }),
            Tok::Ident { name, delimited } => {
                if !delimited && (name == "true" || name == "false") && !self.is_sym("(") {
                    return Ok(Expr::Literal(Literal::Boolean(name == "true")));
                }
                self.member_or_call(None, name, t.pos)
            }
            other => Err(SyntaxError::new(t.pos, "an expression").found(&describe(&other))),
        }
    }

    fn number(&mut self, text: &str, long: bool, pos: Pos) -> Result<Expr, SyntaxError> {
        if long {
            return text
                .parse()
                .map(|i| Expr::Literal(Literal::Long(i)))
                .map_err(|_| SyntaxError::new(pos, "a long integer within 64 bits"));
        }
        let unit = match self.peek_tok() {
            Tok::Str(u) => Some(u.clone()),
            Tok::Ident {
                name,
                delimited: false,
            } if is_calendar_unit(name) => Some(singular_calendar(name).to_string()),
            _ => None,
        };
        if let Some(unit) = unit {
            self.advance();
            let value = parse_decimal(text).ok_or_else(|| SyntaxError::new(pos, "a number"))?;
            return Ok(Expr::Literal(Literal::Quantity(Quantity { value, unit })));
        }
        if text.contains('.') {
            let d = parse_decimal(text)
                .ok_or_else(|| SyntaxError::new(pos, "a decimal within 28 digits"))?;
            return Ok(Expr::Literal(Literal::Decimal(d)));
        }
        match text.parse::<i64>() {
            Ok(i) if i <= i64::from(i32::MAX) => Ok(Expr::Literal(Literal::Integer(i))),
            Ok(i) => Ok(Expr::Literal(Literal::Long(i))),
            Err(_) => parse_decimal(text)
                .map(|d| Expr::Literal(Literal::Decimal(d)))
                .ok_or_else(|| SyntaxError::new(pos, "a number within range")),
        }
    }
}

fn datetime_literal(s: &str, pos: Pos) -> Result<Literal, SyntaxError> {
    let t = if let Some(time) = s.strip_prefix('T') {
        Temporal::parse_time(time)
    } else {
        Temporal::parse_date_time(s)
    };
    t.map(Literal::Temporal).ok_or_else(|| {
        SyntaxError::new(pos, "a valid date, dateTime or time literal").found(&format!("@{s}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        let e = parse("1 + 2 * 3 = 7 and true").unwrap();
        let Expr::Binary {
            op: BinOp::And,
            left,
            ..
        } = e
        else {
            panic!("and at the top")
        };
        assert!(matches!(*left, Expr::Binary { op: BinOp::Eq, .. }));
        assert!(matches!(
            parse("1 > 2 is Boolean").unwrap(),
            Expr::Binary { op: BinOp::Gt, .. }
        ));
        assert!(matches!(
            parse("-1.convertsToInteger()").unwrap(),
            Expr::Unary { .. }
        ));
    }

    #[test]
    fn literals() {
        assert_eq!(parse("4 days").unwrap(), parse("4 'day'").unwrap());
        assert!(matches!(
            parse("@2015-02-04T14:34:28.123+09:00").unwrap(),
            Expr::Literal(Literal::Temporal(_))
        ));
        assert!(matches!(
            parse("@T14:34").unwrap(),
            Expr::Literal(Literal::Temporal(_))
        ));
        assert!(matches!(
            parse("10L").unwrap(),
            Expr::Literal(Literal::Long(10))
        ));
        assert_eq!(
            parse("'a\\'b\\u0041'").unwrap(),
            Expr::Literal(Literal::String("a'bA".into()))
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("name.given.\n  where(").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (2, 9));
        let e = parse("2 + 2 /").unwrap_err();
        assert_eq!(e.expected, "an expression");
        assert!(parse("1 + 2 )").is_err());
        assert!(parse(&"(".repeat(1000)).is_err());
        assert!(parse(&"-".repeat(10000)).is_err());
        assert!(parse(&"a.".repeat(10000)).is_err());
        assert!(parse(&"1+".repeat(10000)).is_err());
    }
}
