//! Splits a selector into tokens, remembering where each one starts.

use crate::ParseError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    Not,
    And,
    Or,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    All,
    Global,
    Has(String),
    Label(String),
    Str(String),
    Eof,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Comma => "','".into(),
            Tok::Eq => "'=='".into(),
            Tok::Ne => "'!='".into(),
            Tok::Not => "'!'".into(),
            Tok::And => "'&&'".into(),
            Tok::Or => "'||'".into(),
            Tok::In => "'in'".into(),
            Tok::NotIn => "'not in'".into(),
            Tok::Contains => "'contains'".into(),
            Tok::StartsWith => "'starts with'".into(),
            Tok::EndsWith => "'ends with'".into(),
            Tok::All => "'all()'".into(),
            Tok::Global => "'global()'".into(),
            Tok::Has(k) => format!("'has({k})'"),
            Tok::Label(k) => format!("label '{k}'"),
            Tok::Str(s) => format!("string \"{s}\""),
            Tok::Eof => "end of selector".into(),
        }
    }
}

/// A token and the byte offset where it starts.
pub(crate) type Spanned = (Tok, usize);

/// The longest label key Calico's selector tokenizer takes
/// (`[a-zA-Z0-9_./-]{1,512}`).
const MAX_LABEL: usize = 512;

fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_ws(&mut self) {
        while matches!(self.src.as_bytes().get(self.pos), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.rest().starts_with(word) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn label(&mut self) -> Option<String> {
        let len = self
            .rest()
            .bytes()
            .take_while(|b| is_label_byte(*b))
            .count();
        if len == 0 || len > MAX_LABEL {
            return None;
        }
        let label = self.rest()[..len].to_string();
        self.pos += len;
        Some(label)
    }

    fn err(&self, at: usize, message: impl Into<String>) -> ParseError {
        ParseError::at(self.src, at, message)
    }

    /// `word(` ... `)` with optional blanks inside; returns what was between.
    fn call(
        &mut self,
        start: usize,
        name: &str,
        with_label: bool,
    ) -> Result<Option<String>, ParseError> {
        self.skip_ws();
        let arg = if with_label {
            let Some(label) = self.label() else {
                return Err(self.err(self.pos, format!("expected a label name inside {name}(")));
            };
            self.skip_ws();
            Some(label)
        } else {
            None
        };
        if !self.eat(")") {
            return Err(self.err(start, format!("no closing ')' after {name}(")));
        }
        Ok(arg)
    }

    /// After a label only an operator may follow.
    fn operator(&mut self, label: &str) -> Result<Tok, ParseError> {
        let start = self.pos;
        let two_words = |lx: &mut Self, first: &str, tok: Tok| {
            lx.pos += first.len();
            lx.skip_ws();
            if lx.eat("with") {
                Ok(tok)
            } else {
                Err(lx.err(
                    start,
                    format!("expected '{first} with' after label '{label}'"),
                ))
            }
        };
        if self.eat("contains") {
            Ok(Tok::Contains)
        } else if self.rest().starts_with("starts") {
            two_words(self, "starts", Tok::StartsWith)
        } else if self.rest().starts_with("ends") {
            two_words(self, "ends", Tok::EndsWith)
        } else if self.eat("not") {
            self.skip_ws();
            if self.eat("in") {
                Ok(Tok::NotIn)
            } else {
                Err(self.err(start, format!("expected 'not in' after label '{label}'")))
            }
        } else if self.eat("in") {
            Ok(Tok::In)
        } else {
            Err(self.err(
                start,
                format!("expected an operator (==, !=, in, not in, contains, starts with, ends with) after label '{label}'"),
            ))
        }
    }

    fn string(&mut self, quote: char) -> Result<Tok, ParseError> {
        let start = self.pos;
        self.pos += 1;
        match self.rest().find(quote) {
            Some(len) => {
                let value = self.rest()[..len].to_string();
                self.pos += len + 1;
                Ok(Tok::Str(value))
            }
            None => Err(self.err(start, "unterminated string")),
        }
    }

    fn next(&mut self, prev: Option<&Tok>) -> Result<Spanned, ParseError> {
        self.skip_ws();
        let start = self.pos;
        let Some(&b) = self.src.as_bytes().get(self.pos) else {
            return Ok((Tok::Eof, start));
        };
        let single = |lx: &mut Self, tok: Tok| {
            lx.pos += 1;
            Ok((tok, start))
        };
        let double = |lx: &mut Self, second: u8, tok: Tok, want: &str| {
            if lx.src.as_bytes().get(lx.pos + 1) == Some(&second) {
                lx.pos += 2;
                Ok((tok, start))
            } else {
                Err(lx.err(start, format!("expected '{want}'")))
            }
        };
        match b {
            b'(' => single(self, Tok::LParen),
            b')' => single(self, Tok::RParen),
            b'{' => single(self, Tok::LBrace),
            b'}' => single(self, Tok::RBrace),
            b',' => single(self, Tok::Comma),
            b'"' => Ok((self.string('"')?, start)),
            b'\'' => Ok((self.string('\'')?, start)),
            b'=' => double(self, b'=', Tok::Eq, "=="),
            b'&' => double(self, b'&', Tok::And, "&&"),
            b'|' => double(self, b'|', Tok::Or, "||"),
            b'!' if self.src.as_bytes().get(self.pos + 1) == Some(&b'=') => {
                self.pos += 2;
                Ok((Tok::Ne, start))
            }
            b'!' => single(self, Tok::Not),
            _ => {
                if let Some(Tok::Label(label)) = prev {
                    return Ok((self.operator(label)?, start));
                }
                if self.eat("has(") {
                    let label = self.call(start, "has", true)?.unwrap_or_default();
                    return Ok((Tok::Has(label), start));
                }
                if self.eat("all(") {
                    self.call(start, "all", false)?;
                    return Ok((Tok::All, start));
                }
                if self.eat("global(") {
                    self.call(start, "global", false)?;
                    return Ok((Tok::Global, start));
                }
                match self.label() {
                    Some(label) => Ok((Tok::Label(label), start)),
                    None if is_label_byte(b) => Err(self.err(
                        start,
                        format!("a label key is at most {MAX_LABEL} characters"),
                    )),
                    None => {
                        let ch = self.rest().chars().next().unwrap_or(' ');
                        Err(self.err(start, format!("unexpected character '{ch}'")))
                    }
                }
            }
        }
    }
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<Spanned>, ParseError> {
    let mut lexer = Lexer { src, pos: 0 };
    let mut tokens: Vec<Spanned> = Vec::new();
    loop {
        let tok = lexer.next(tokens.last().map(|(t, _)| t))?;
        let done = tok.0 == Tok::Eof;
        tokens.push(tok);
        if done {
            return Ok(tokens);
        }
    }
}
