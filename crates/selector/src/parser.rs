//! Recursive-descent parser over the token stream.

use crate::lexer::{tokenize, Spanned, Tok};
use crate::Expr;
use std::collections::BTreeSet;

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 128;

/// A selector that does not parse, with the 1-based column of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn at(src: &str, byte_offset: usize, message: impl Into<String>) -> Self {
        let column = src
            .get(..byte_offset)
            .map_or(byte_offset, |s| s.chars().count())
            + 1;
        ParseError {
            column,
            message: message.into(),
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Spanned>,
    pos: usize,
    depth: usize,
}

pub(crate) fn parse(src: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(src)?;
    if tokens.len() == 1 {
        return Ok(Expr::All);
    }
    let mut p = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
    };
    let expr = p.or()?;
    match p.peek() {
        Tok::Eof => Ok(expr),
        other => Err(p.error(format!(
            "unexpected {} after a complete expression",
            other.describe()
        ))),
    }
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.tokens[self.pos].0
    }

    fn bump(&mut self) -> Tok {
        let tok = self.tokens[self.pos].0.clone();
        if tok != Tok::Eof {
            self.pos += 1;
        }
        tok
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError::at(self.src, self.tokens[self.pos].1, message)
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), ParseError> {
        if self.peek() == want {
            self.bump();
            Ok(())
        } else {
            Err(self.error(format!("expected {what}, found {}", self.peek().describe())))
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut ops = vec![self.and()?];
        while *self.peek() == Tok::Or {
            self.bump();
            ops.push(self.and()?);
        }
        Ok(if ops.len() == 1 {
            ops.remove(0)
        } else {
            Expr::Or(ops)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut ops = vec![self.unary()?];
        while *self.peek() == Tok::And {
            self.bump();
            ops.push(self.unary()?);
        }
        Ok(if ops.len() == 1 {
            ops.remove(0)
        } else {
            Expr::And(ops)
        })
    }

    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("selector nests deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if *self.peek() == Tok::Not {
            self.bump();
            return self.nested(|p| Ok(Expr::Not(Box::new(p.unary()?))));
        }
        self.term()
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        match self.bump() {
            Tok::LParen => {
                let inner = self.nested(Self::or)?;
                self.expect(&Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::All => Ok(Expr::All),
            Tok::Global => Ok(Expr::Global),
            Tok::Has(k) => Ok(Expr::Has(k)),
            Tok::Label(k) => self.comparison(k),
            other => {
                self.pos = self.pos.saturating_sub(usize::from(other != Tok::Eof));
                Err(self.error(format!(
                    "expected a label, has(), all(), global(), '!' or '(', found {}",
                    other.describe()
                )))
            }
        }
    }

    fn string(&mut self, after: &str) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(s)
            }
            other => Err(self.error(format!(
                "expected a quoted string after {after}, found {}",
                other.describe()
            ))),
        }
    }

    fn comparison(&mut self, key: String) -> Result<Expr, ParseError> {
        let op = self.bump();
        Ok(match op {
            Tok::Eq => Expr::Eq(key, self.string("'=='")?),
            Tok::Ne => Expr::Ne(key, self.string("'!='")?),
            Tok::Contains => Expr::Contains(key, self.string("'contains'")?),
            Tok::StartsWith => Expr::StartsWith(key, self.string("'starts with'")?),
            Tok::EndsWith => Expr::EndsWith(key, self.string("'ends with'")?),
            Tok::In => Expr::In(key, self.set("'in'")?),
            Tok::NotIn => Expr::NotIn(key, self.set("'not in'")?),
            other => {
                self.pos -= usize::from(other != Tok::Eof);
                return Err(self.error(format!(
                    "expected an operator after label '{key}', found {}",
                    other.describe()
                )));
            }
        })
    }

    fn set(&mut self, after: &str) -> Result<BTreeSet<String>, ParseError> {
        if *self.peek() != Tok::LBrace {
            return Err(self.error(format!(
                "expected '{{' to start a set after {after}, found {}",
                self.peek().describe()
            )));
        }
        self.bump();
        let mut values = BTreeSet::new();
        if *self.peek() == Tok::RBrace {
            self.bump();
            return Ok(values);
        }
        loop {
            values.insert(self.string("'{' or ','")?);
            match self.bump() {
                Tok::Comma => continue,
                Tok::RBrace => return Ok(values),
                other => {
                    self.pos -= usize::from(other != Tok::Eof);
                    return Err(self.error(format!(
                        "expected ',' or '}}' in a set, found {}",
                        other.describe()
                    )));
                }
            }
        }
    }
}
