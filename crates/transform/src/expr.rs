//! A small arithmetic expression language for on-demand features, evaluated over Arrow arrays.
//!
//! ```text
//! expr    := term (('+' | '-') term)*
//! term    := unary (('*' | '/') unary)*
//! unary   := '-' unary | primary
//! primary := number | 'string' | true | false | column | function '(' expr (',' expr)* ')' | '(' expr ')'
//! ```
//!
//! Comparisons (`<`, `<=`, `>`, `>=`, `==` or `=`, `!=`) and `and`/`or` (any case) give 1 or 0,
//! so the same language writes filters: `in_stock = true AND region = 'SE'`. A string literal
//! compares with a text column (or another literal); booleans read as 1 and 0.
//!
//! Columns are numeric features (any integer or float type, read as float64). Functions: `abs`,
//! `sqrt`, `ln`, `log1p`, `exp`, `min`, `max`, `pow`. A null operand gives null, and so does a
//! result that is not finite (division by zero, `ln(0)`, `sqrt(-1)`): a model is better served
//! by a missing value than by an infinity, and training and serving agree on it because both run
//! this code.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;

use crate::{Result, TransformError, definition};

/// The most tokens an expression may have. Evaluation walks the tree recursively, and a chain
/// of `+` is as deep as it is long; 512 tokens keep every walk a few hundred frames deep, far
/// inside any thread's stack, and allow sums of hundreds of terms.
pub const MAX_TOKENS: usize = 512;
/// The deepest nesting of parentheses, calls and unary minus the parser follows.
pub const MAX_NESTING: usize = 64;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    /// A string literal: only a comparison's operand.
    Str(String),
    Column(String),
    Neg(Box<Expr>),
    Binary(Box<Expr>, BinaryOp, Box<Expr>),
    Call(Function, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// Comparisons and logic give 1 for true and 0 for false (filters keep rows above 0).
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinaryOp {
    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Abs,
    Sqrt,
    Ln,
    Log1p,
    Exp,
    Min,
    Max,
    Pow,
}

impl Function {
    fn parse(name: &str) -> Option<(Function, usize)> {
        Some(match name {
            "abs" => (Function::Abs, 1),
            "sqrt" => (Function::Sqrt, 1),
            "ln" => (Function::Ln, 1),
            "log1p" => (Function::Log1p, 1),
            "exp" => (Function::Exp, 1),
            "min" => (Function::Min, 2),
            "max" => (Function::Max, 2),
            "pow" => (Function::Pow, 2),
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Function::Abs => "abs",
            Function::Sqrt => "sqrt",
            Function::Ln => "ln",
            Function::Log1p => "log1p",
            Function::Exp => "exp",
            Function::Min => "min",
            Function::Max => "max",
            Function::Pow => "pow",
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(n) => write!(f, "{n}"),
            Expr::Str(text) => write!(f, "'{}'", text.replace('\'', "''")),
            Expr::Column(c) => f.write_str(c),
            Expr::Neg(e) => write!(f, "-({e})"),
            Expr::Binary(a, op, b) => {
                write!(f, "({a} {} {b})", op.symbol())
            }
            Expr::Call(func, args) => {
                write!(f, "{}(", func.name())?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl Expr {
    /// Parses `text`; the error says where and what was expected.
    pub fn parse(text: &str) -> Result<Expr> {
        let tokens = tokenize(text)?;
        if tokens.len() > MAX_TOKENS {
            return definition(format!(
                "expression: {} tokens, more than the {MAX_TOKENS} an expression may have",
                tokens.len()
            ));
        }
        let mut parser = Parser {
            tokens,
            pos: 0,
            nesting: 0,
        };
        let expr = parser.logic()?;
        match parser.tokens.get(parser.pos) {
            None => Ok(expr),
            Some((at, tok)) => definition(format!(
                "expression '{text}': unexpected {tok} at character {}",
                at + 1
            )),
        }
    }

    /// The columns the expression reads, each once, in order of first use.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_columns(&mut out);
        out
    }

    fn collect_columns(&self, out: &mut Vec<String>) {
        match self {
            Expr::Number(_) | Expr::Str(_) => {}
            Expr::Column(c) => {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
            Expr::Neg(e) => e.collect_columns(out),
            Expr::Binary(a, _, b) => {
                a.collect_columns(out);
                b.collect_columns(out);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.collect_columns(out)),
        }
    }

    /// Evaluates over every row of `batch`, vectorised, as float64.
    pub fn eval(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        Ok(Arc::new(self.eval_f64(batch)?))
    }

    fn eval_f64(&self, batch: &RecordBatch) -> Result<Float64Array> {
        let rows = batch.num_rows();
        Ok(match self {
            Expr::Number(n) => Float64Array::from_value(*n, rows),
            Expr::Column(name) => {
                let column = batch.column_by_name(name).ok_or_else(|| {
                    TransformError::Definition(format!("expression reads unknown column '{name}'"))
                })?;
                as_f64(name, column)?
            }
            Expr::Str(text) => {
                return definition(format!("expression uses the string '{text}' as a number"));
            }
            Expr::Neg(e) => unary(&e.eval_f64(batch)?, |x| -x),
            Expr::Binary(a, op, b)
                if op.is_comparison() && (a.is_text(batch) || b.is_text(batch)) =>
            {
                compare_text(&a.eval_text(batch)?, *op, &b.eval_text(batch)?)
            }
            Expr::Binary(a, op, b) => {
                let (a, b) = (a.eval_f64(batch)?, b.eval_f64(batch)?);
                match op {
                    BinaryOp::Add => binary(&a, &b, |x, y| x + y),
                    BinaryOp::Sub => binary(&a, &b, |x, y| x - y),
                    BinaryOp::Mul => binary(&a, &b, |x, y| x * y),
                    BinaryOp::Div => binary(&a, &b, |x, y| x / y),
                    BinaryOp::Lt => binary(&a, &b, |x, y| truth(x < y)),
                    BinaryOp::Le => binary(&a, &b, |x, y| truth(x <= y)),
                    BinaryOp::Gt => binary(&a, &b, |x, y| truth(x > y)),
                    BinaryOp::Ge => binary(&a, &b, |x, y| truth(x >= y)),
                    BinaryOp::Eq => binary(&a, &b, |x, y| truth(x == y)),
                    BinaryOp::Ne => binary(&a, &b, |x, y| truth(x != y)),
                    BinaryOp::And => binary(&a, &b, |x, y| truth(x > 0.0 && y > 0.0)),
                    BinaryOp::Or => binary(&a, &b, |x, y| truth(x > 0.0 || y > 0.0)),
                }
            }
            Expr::Call(func, args) => {
                let a = args[0].eval_f64(batch)?;
                match func {
                    Function::Abs => unary(&a, f64::abs),
                    Function::Sqrt => unary(&a, f64::sqrt),
                    Function::Ln => unary(&a, f64::ln),
                    Function::Log1p => unary(&a, f64::ln_1p),
                    Function::Exp => unary(&a, f64::exp),
                    Function::Min => binary(&a, &args[1].eval_f64(batch)?, f64::min),
                    Function::Max => binary(&a, &args[1].eval_f64(batch)?, f64::max),
                    Function::Pow => binary(&a, &args[1].eval_f64(batch)?, f64::powf),
                }
            }
        })
    }
}

impl Expr {
    /// Whether this operand is text: a string literal or a text column.
    fn is_text(&self, batch: &RecordBatch) -> bool {
        match self {
            Expr::Str(_) => true,
            Expr::Column(name) => batch.column_by_name(name).is_some_and(|c| {
                matches!(
                    c.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
            }),
            _ => false,
        }
    }

    /// A comparison's text operand, one value per row.
    fn eval_text(&self, batch: &RecordBatch) -> Result<Vec<Option<String>>> {
        let rows = batch.num_rows();
        match self {
            Expr::Str(text) => Ok(vec![Some(text.clone()); rows]),
            Expr::Column(name) => {
                let column = batch.column_by_name(name).ok_or_else(|| {
                    TransformError::Definition(format!("expression reads unknown column '{name}'"))
                })?;
                let text = cast(column, &DataType::Utf8).map_err(|e| {
                    TransformError::Definition(format!(
                        "column '{name}' cannot be read as text: {e}"
                    ))
                })?;
                Ok(text
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(str::to_owned))
                    .collect())
            }
            other => definition(format!(
                "expression compares {other} with text; expected a text column or a string"
            )),
        }
    }
}

impl BinaryOp {
    fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne
        )
    }
}

/// A comparison of text operands, row by row: 1, 0, or null where either is null.
fn compare_text(a: &[Option<String>], op: BinaryOp, b: &[Option<String>]) -> Float64Array {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let (x, y) = (x.as_ref()?, y.as_ref()?);
            let holds = match op {
                BinaryOp::Lt => x < y,
                BinaryOp::Le => x <= y,
                BinaryOp::Gt => x > y,
                BinaryOp::Ge => x >= y,
                BinaryOp::Eq => x == y,
                _ => x != y,
            };
            Some(truth(holds))
        })
        .collect()
}

/// Reads a numeric column as float64; anything else is a definition error.
pub(crate) fn as_f64(name: &str, column: &ArrayRef) -> Result<Float64Array> {
    let ty = column.data_type();
    let numeric =
        ty.is_integer() || ty.is_floating() || matches!(ty, DataType::Null | DataType::Boolean);
    if !numeric {
        return definition(format!(
            "column '{name}' has type {}, expected a number",
            column.data_type()
        ));
    }
    let cast = cast(column, &DataType::Float64).map_err(|e| {
        TransformError::Definition(format!("column '{name}' cannot be read as float64: {e}"))
    })?;
    Ok(cast.as_primitive::<Float64Type>().clone())
}

/// Non-finite results become null (see the module docs).
pub(crate) fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn truth(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

pub(crate) fn unary(a: &Float64Array, f: impl Fn(f64) -> f64) -> Float64Array {
    a.iter().map(|x| x.and_then(|x| finite(f(x)))).collect()
}

pub(crate) fn binary(
    a: &Float64Array,
    b: &Float64Array,
    f: impl Fn(f64, f64) -> f64,
) -> Float64Array {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => finite(f(x, y)),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Str(String),
    Ident(String),
    Symbol(char),
    Compare(BinaryOp),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Number(n) => write!(f, "number {n}"),
            Token::Str(s) => write!(f, "string '{s}'"),
            Token::Ident(s) => write!(f, "name '{s}'"),
            Token::Symbol(c) => write!(f, "'{c}'"),
            Token::Compare(op) => write!(f, "'{}'", op.symbol()),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || chars[i] == '.'
                    || chars[i] == 'e'
                    || chars[i] == 'E'
                    || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            let literal: String = chars[start..i].iter().collect();
            let n = literal.parse::<f64>().map_err(|_| {
                TransformError::Definition(format!(
                    "expression '{text}': bad number '{literal}' at character {}",
                    start + 1
                ))
            })?;
            tokens.push((start, Token::Number(n)));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push((start, Token::Ident(chars[start..i].iter().collect())));
        } else if "<>=!".contains(c) {
            let two = chars.get(i + 1) == Some(&'=');
            let op = match (c, two) {
                ('<', false) => BinaryOp::Lt,
                ('<', true) => BinaryOp::Le,
                ('>', false) => BinaryOp::Gt,
                ('>', true) => BinaryOp::Ge,
                ('=', _) => BinaryOp::Eq,
                ('!', true) => BinaryOp::Ne,
                _ => {
                    return definition(format!(
                        "expression '{text}': unexpected '{c}' at character {}; comparisons are <, <=, >, >=, == (or =) and !=",
                        i + 1
                    ));
                }
            };
            tokens.push((i, Token::Compare(op)));
            i += if two { 2 } else { 1 };
        } else if c == '\'' {
            // SQL's quoting: '' inside a string is one quote.
            let start = i;
            let mut literal = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return definition(format!(
                            "expression '{text}': the string opened at character {} is not closed",
                            start + 1
                        ));
                    }
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        literal.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        literal.push(other);
                        i += 1;
                    }
                }
            }
            tokens.push((start, Token::Str(literal)));
        } else if "+-*/(),".contains(c) {
            tokens.push((i, Token::Symbol(c)));
            i += 1;
        } else {
            return definition(format!(
                "expression '{text}': unexpected character '{c}' at character {}",
                i + 1
            ));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    /// How deep the recursive descent is in parentheses, calls and unary minus.
    nesting: usize,
}

impl Parser {
    /// Enters one level of nesting, refusing past [`MAX_NESTING`].
    fn nest(&mut self) -> Result<()> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            let at = self.tokens.get(self.pos).map_or(0, |(at, _)| *at);
            return definition(format!(
                "expression: nested more than {MAX_NESTING} deep at character {}",
                at + 1
            ));
        }
        Ok(())
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    /// Whether the next token is this keyword, in any case.
    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(name)) if name.eq_ignore_ascii_case(word))
    }

    fn eat(&mut self, symbol: char) -> bool {
        if self.peek() == Some(&Token::Symbol(symbol)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, symbol: char) -> Result<()> {
        if self.eat(symbol) {
            return Ok(());
        }
        match self.tokens.get(self.pos) {
            Some((at, tok)) => definition(format!(
                "expression: expected '{symbol}' at character {}, found {tok}",
                at + 1
            )),
            None => definition(format!("expression: expected '{symbol}', found the end")),
        }
    }

    /// `a or b`, lowest precedence; then `and`, then comparisons, then arithmetic.
    fn logic(&mut self) -> Result<Expr> {
        let mut left = self.conjunction()?;
        while self.keyword("or") {
            self.pos += 1;
            left = Expr::Binary(Box::new(left), BinaryOp::Or, Box::new(self.conjunction()?));
        }
        Ok(left)
    }

    fn conjunction(&mut self) -> Result<Expr> {
        let mut left = self.comparison()?;
        while self.keyword("and") {
            self.pos += 1;
            left = Expr::Binary(Box::new(left), BinaryOp::And, Box::new(self.comparison()?));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expr> {
        let left = self.expr()?;
        if let Some(Token::Compare(op)) = self.peek() {
            let op = *op;
            self.pos += 1;
            return Ok(Expr::Binary(Box::new(left), op, Box::new(self.expr()?)));
        }
        Ok(left)
    }

    fn expr(&mut self) -> Result<Expr> {
        let mut left = self.term()?;
        loop {
            let op = if self.eat('+') {
                BinaryOp::Add
            } else if self.eat('-') {
                BinaryOp::Sub
            } else {
                return Ok(left);
            };
            left = Expr::Binary(Box::new(left), op, Box::new(self.term()?));
        }
    }

    fn term(&mut self) -> Result<Expr> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat('*') {
                BinaryOp::Mul
            } else if self.eat('/') {
                BinaryOp::Div
            } else {
                return Ok(left);
            };
            left = Expr::Binary(Box::new(left), op, Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr> {
        if self.eat('-') {
            self.nest()?;
            let inner = self.unary()?;
            self.nesting -= 1;
            return Ok(Expr::Neg(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr> {
        let Some((at, token)) = self.tokens.get(self.pos).cloned() else {
            return definition("expression: expected a value, found the end");
        };
        self.pos += 1;
        match token {
            Token::Number(n) => Ok(Expr::Number(n)),
            Token::Str(text) => Ok(Expr::Str(text)),
            Token::Ident(name) if name.eq_ignore_ascii_case("true") => Ok(Expr::Number(1.0)),
            Token::Ident(name) if name.eq_ignore_ascii_case("false") => Ok(Expr::Number(0.0)),
            Token::Symbol('(') => {
                self.nest()?;
                let inner = self.logic()?;
                self.expect(')')?;
                self.nesting -= 1;
                Ok(inner)
            }
            Token::Ident(name) if self.peek() == Some(&Token::Symbol('(')) => {
                let Some((func, arity)) = Function::parse(&name) else {
                    return definition(format!(
                        "expression: unknown function '{name}' at character {}; known: abs, sqrt, ln, log1p, exp, min, max, pow",
                        at + 1
                    ));
                };
                self.pos += 1;
                self.nest()?;
                let mut args = vec![self.expr()?];
                while self.eat(',') {
                    args.push(self.expr()?);
                }
                self.expect(')')?;
                self.nesting -= 1;
                if args.len() != arity {
                    return definition(format!(
                        "expression: {name} takes {arity} argument(s), got {}",
                        args.len()
                    ));
                }
                Ok(Expr::Call(func, args))
            }
            Token::Ident(name) => Ok(Expr::Column(name)),
            other => definition(format!(
                "expression: expected a value at character {}, found {other}",
                at + 1
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{Field, Schema};

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("amount", DataType::Float64, true),
                Field::new("avg", DataType::Float64, true),
                Field::new("n", DataType::Int64, true),
            ])),
            vec![
                Arc::new(Float64Array::from(vec![
                    Some(10.0),
                    Some(3.0),
                    None,
                    Some(1.0),
                ])),
                Arc::new(Float64Array::from(vec![
                    Some(4.0),
                    Some(0.0),
                    Some(1.0),
                    Some(2.0),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn deep_and_long_expressions_are_refused_before_they_reach_the_stack() {
        let refused = |text: String, says: &str| {
            let err = Expr::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains(says),
                "{}…: {err}",
                &text[..40.min(text.len())]
            );
        };
        refused(
            format!("{}amount{}", "(".repeat(2000), ")".repeat(2000)),
            "tokens",
        );
        refused(
            format!("{}amount{}", "(".repeat(100), ")".repeat(100)),
            "nested",
        );
        refused(vec!["amount > 1"; 5000].join(" OR "), "tokens");
        refused(vec!["amount"; 5000].join(" + "), "tokens");
        refused(format!("{}amount", "-".repeat(100)), "nested");
        refused(
            format!("{}amount{}", "abs(".repeat(100), ")".repeat(100)),
            "nested",
        );
        // Long enough for any real feature: a sum of 200 terms.
        let sum = Expr::parse(&vec!["amount"; 200].join(" + ")).unwrap();
        let out = sum.eval(&batch()).unwrap();
        assert_eq!(out.as_primitive::<Float64Type>().value(0), 2000.0);
        Expr::parse(&format!("{}amount{}", "(".repeat(60), ")".repeat(60))).unwrap();
    }

    #[test]
    fn filters_compare_text_and_booleans() {
        use arrow::array::{BooleanArray, StringArray};
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("in_stock", DataType::Boolean, true),
                Field::new("region", DataType::Utf8, true),
                Field::new("price", DataType::Float64, true),
            ])),
            vec![
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    Some(true),
                    None,
                ])),
                Arc::new(StringArray::from(vec![
                    Some("SE"),
                    Some("SE"),
                    Some("it's"),
                    Some("SE"),
                ])),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])),
            ],
        )
        .unwrap();
        let eval = |text: &str| {
            let out = Expr::parse(text).unwrap().eval(&batch).unwrap();
            out.as_primitive::<Float64Type>().iter().collect::<Vec<_>>()
        };
        assert_eq!(
            eval("in_stock = true AND region = 'SE'"),
            vec![Some(1.0), Some(0.0), Some(0.0), None]
        );
        assert_eq!(
            eval("region != 'SE' or price >= 4"),
            vec![Some(0.0), Some(0.0), Some(1.0), Some(1.0)]
        );
        assert_eq!(
            eval("region == 'it''s'"),
            vec![Some(0.0), Some(0.0), Some(1.0), Some(0.0)]
        );
        let unclosed = Expr::parse("region = 'SE").unwrap_err().to_string();
        assert!(unclosed.contains("not closed"), "{unclosed}");
        let misuse = Expr::parse("price + 'SE'")
            .unwrap()
            .eval(&batch)
            .unwrap_err()
            .to_string();
        assert!(misuse.contains("string 'SE' as a number"), "{misuse}");
    }

    #[test]
    fn precedence_and_functions() {
        let e = Expr::parse("amount / avg + 2 * n - -1").unwrap();
        let out = e.eval(&batch()).unwrap();
        let out = out.as_primitive::<Float64Type>();
        assert_eq!(out.value(0), 10.0 / 4.0 + 2.0 + 1.0);
        // Division by zero and a null operand are null.
        assert!(out.is_null(1));
        assert!(out.is_null(2));
        assert_eq!(out.value(3), 0.5 + 8.0 + 1.0);
        let e = Expr::parse("max(log1p(amount), pow(n, 2))").unwrap();
        let out = e.eval(&batch()).unwrap();
        assert_eq!(
            out.as_primitive::<Float64Type>().value(0),
            10f64.ln_1p().max(1.0)
        );
        assert_eq!(e.columns(), ["amount", "n"]);
        assert_eq!(Expr::parse("1.5e3").unwrap(), Expr::Number(1500.0));
    }

    #[test]
    fn errors_say_where() {
        let err = Expr::parse("amount / (avg").unwrap_err().to_string();
        assert!(err.contains("expected ')'"), "{err}");
        let err = Expr::parse("amount $ 2").unwrap_err().to_string();
        assert!(err.contains("character 8"), "{err}");
        let err = Expr::parse("foo(amount)").unwrap_err().to_string();
        assert!(err.contains("unknown function 'foo'"), "{err}");
        let err = Expr::parse("min(amount)").unwrap_err().to_string();
        assert!(err.contains("takes 2"), "{err}");
        let err = Expr::parse("nope * 2").unwrap().eval(&batch()).unwrap_err();
        assert!(err.to_string().contains("unknown column 'nope'"));
    }
}
