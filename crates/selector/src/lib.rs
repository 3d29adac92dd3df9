//! The Calico label selector language.
//!
//! ```text
//! expr   := and ( "||" and )*
//! and    := unary ( "&&" unary )*
//! unary  := "!" unary | term
//! term   := "(" expr ")" | "all()" | "global()" | "has(" label ")"
//!         | label ( "==" | "!=" | "contains" | "starts with" | "ends with" ) string
//!         | label ( "in" | "not in" ) "{" [ string ( "," string )* ] "}"
//! string := '"' chars '"' | "'" chars "'"
//! label  := [a-zA-Z0-9_./-]+
//! ```
//!
//! An empty selector means `all()`. [`Selector`] prints in canonical form
//! (`Display`), which re-parses to the same tree.

mod ast;
mod eval;
mod index;
mod intern;
mod lexer;
mod parser;

pub use ast::Expr;
pub use eval::Labels;
pub use index::{LabelIndex, MatchEvent};
pub use intern::{Interner, Str};
pub use parser::ParseError;

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    expr: Expr,
}

impl Selector {
    /// Parses a selector; an empty or blank string is `all()`.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        parser::parse(input).map(|expr| Selector { expr })
    }

    /// The selector that matches everything.
    pub fn all() -> Self {
        Selector { expr: Expr::All }
    }

    pub fn from_expr(expr: Expr) -> Self {
        Selector { expr }
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether the selector matches this set of labels.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.expr.evaluate(labels)
    }

    /// Whether `global()` appears anywhere (allowed only in namespace selectors).
    pub fn uses_global(&self) -> bool {
        self.expr.any(&|e| matches!(e, Expr::Global))
    }

    /// Every label key the selector refers to.
    pub fn label_keys(&self) -> Vec<&str> {
        let mut keys = Vec::new();
        self.expr.collect_keys(&mut keys);
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.expr, f)
    }
}

impl std::str::FromStr for Selector {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}
