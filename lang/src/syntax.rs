//! Source text to syntax tree: the pest grammar, a Pratt parser for operator precedence,
//! literal validation, and limits that keep hostile input from exhausting the stack.
//!
//! **Invariant:** `pest::iterators::Pair` never leaves this file; everything downstream
//! sees `ast`. Parsing never panics: every failure is a `Diagnostic`.

use pest::Parser as _;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};

use crate::ast::*;
use crate::diagnostics::{Diagnostic, SourceId, Span};

#[derive(pest_derive::Parser)]
#[grammar = "grammar.pest"]
struct Grammar;

use crate::limits::{MAX_NESTING, MAX_OPERATORS};

/// Parses a source file. On failure returns the diagnostics (one for a syntax error).
pub fn parse(src: &str, id: SourceId) -> Result<Program, Vec<Diagnostic>> {
    check_nesting(src, id).map_err(|d| vec![d])?;
    let mut pairs = Grammar::parse(Rule::file, src).map_err(|e| vec![pest_error(e, src, id)])?;
    let file = pairs.next().expect("the file rule always yields one pair");
    let mut cx = Cx {
        id,
        errors: Vec::new(),
    };
    let mut items = Vec::new();
    for pair in file.into_inner() {
        match pair.as_rule() {
            Rule::EOI => {}
            _ => {
                if let Some(item) = cx.item(pair) {
                    items.push(item);
                }
            }
        }
    }
    if cx.errors.is_empty() {
        Ok(Program { items })
    } else {
        Err(cx.errors)
    }
}

fn pratt() -> PrattParser<Rule> {
    PrattParser::new()
        .op(Op::infix(Rule::lt, Assoc::Left)
            | Op::infix(Rule::le, Assoc::Left)
            | Op::infix(Rule::gt, Assoc::Left)
            | Op::infix(Rule::ge, Assoc::Left)
            | Op::infix(Rule::eq, Assoc::Left)
            | Op::infix(Rule::ne, Assoc::Left))
        .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
        .op(Op::infix(Rule::mul, Assoc::Left)
            | Op::infix(Rule::div, Assoc::Left)
            | Op::infix(Rule::matmul, Assoc::Left))
        .op(Op::prefix(Rule::neg))
        .op(Op::infix(Rule::pow, Assoc::Right))
}

/// Rejects bracket nesting deeper than `MAX_NESTING`, skipping comments and strings.
fn check_nesting(src: &str, id: SourceId) -> Result<(), Diagnostic> {
    let bytes = src.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(crate::errors::too_deep(Span::new(id, i, i + 1)));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn describe_rule(rule: Rule) -> &'static str {
    match rule {
        Rule::ident => "a name",
        Rule::number => "a number",
        Rule::string => "a string",
        Rule::expr
        | Rule::primary
        | Rule::paren
        | Rule::call
        | Rule::list
        | Rule::arg
        | Rule::neg
        | Rule::prefix => "an expression",
        Rule::add
        | Rule::sub
        | Rule::mul
        | Rule::div
        | Rule::matmul
        | Rule::pow
        | Rule::lt
        | Rule::le
        | Rule::gt
        | Rule::ge
        | Rule::eq
        | Rule::ne
        | Rule::infix => "an operator",
        Rule::layer_def | Rule::model_def | Rule::train_def | Rule::rule_def | Rule::item => {
            "`layer`, `model`, `train` or `rule`"
        }
        Rule::param_decl
        | Rule::buffer_decl
        | Rule::state_decl
        | Rule::return_stmt
        | Rule::for_stmt
        | Rule::if_stmt
        | Rule::if_block
        | Rule::grad_block
        | Rule::grad_assign
        | Rule::assign
        | Rule::stmt => "a statement",
        Rule::type_ann | Rule::tensor_type => "a type",
        Rule::ret_type => "`->`",
        Rule::block => "`{`",
        Rule::param | Rule::params => "a parameter",
        Rule::EOI => "end of file",
        _ => "something else",
    }
}

fn pest_error(e: pest::error::Error<Rule>, src: &str, id: SourceId) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let rest = &src[pos.min(src.len())..];
    let found: String = match rest.chars().next() {
        None => "end of file".into(),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let w: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .take(24)
                .collect();
            format!("`{w}`")
        }
        Some(c) if c.is_whitespace() => "whitespace".into(),
        Some(c) => format!("`{}`", c.escape_default()),
    };
    let mut expected: Vec<&str> = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            positives.iter().map(|&r| describe_rule(r)).collect()
        }
        ErrorVariant::CustomError { message } => vec![message.as_str()],
    };
    expected.dedup();
    expected.sort_unstable();
    expected.dedup();
    let what = match expected.as_slice() {
        [] => "unexpected input".to_string(),
        [one] => format!("expected {one}"),
        [init @ .., last] => format!("expected {} or {last}", init.join(", ")),
    };
    let len = rest.chars().next().map_or(0, |c| c.len_utf8());
    crate::errors::syntax(
        Span::new(id, pos, pos + len),
        format!("{what}, found {found}"),
    )
}

struct Cx {
    id: SourceId,
    errors: Vec<Diagnostic>,
}

static PRATT: std::sync::LazyLock<PrattParser<Rule>> = std::sync::LazyLock::new(pratt);

impl Cx {
    /// The pair's span without the trailing whitespace and comments that pest includes
    /// when an optional tail skipped them before failing.
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        let text = s.as_str();
        let mut end = text.trim_end().len();
        // Drop a `# comment` ending the last line (a `#` outside string literals).
        loop {
            let line_start = text[..end].rfind('\n').map_or(0, |i| i + 1);
            let mut quoted = false;
            let hash = text[line_start..end].char_indices().find_map(|(k, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                (c == '#' && !quoted).then_some(line_start + k)
            });
            match hash {
                Some(h) if h > 0 => end = text[..h].trim_end().len(),
                _ => break,
            }
        }
        Span::new(self.id, s.start(), s.start() + end)
    }

    fn ident(&self, pair: Pair<Rule>) -> Ident {
        debug_assert_eq!(pair.as_rule(), Rule::ident);
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn item(&mut self, pair: Pair<Rule>) -> Option<Item> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        match rule {
            Rule::layer_def | Rule::model_def => {
                let name = self.ident(inner.next()?);
                let params = self.params(inner.next()?);
                let mut ret = None;
                let mut next = inner.next()?;
                if next.as_rule() == Rule::ret_type {
                    ret = Some(self.type_ann(next.into_inner().next()?)?);
                    next = inner.next()?;
                }
                let body = self.block(next);
                let def = FnDef {
                    name,
                    params,
                    ret,
                    body,
                    span,
                };
                Some(if rule == Rule::layer_def {
                    Item::Layer(def)
                } else {
                    Item::Model(def)
                })
            }
            Rule::train_def => {
                let model = self.ident(inner.next()?);
                let params = self.params(inner.next()?);
                let body = self.block(inner.next()?);
                Some(Item::Train(TrainDef {
                    model,
                    params,
                    body,
                    span,
                }))
            }
            Rule::rule_def => {
                let name = self.ident(inner.next()?);
                let params = self.params(inner.next()?);
                let weight = self.ident(inner.next()?);
                let grad = self.ident(inner.next()?);
                let body = self.block(inner.next()?);
                Some(Item::Rule(RuleDef {
                    name,
                    params,
                    weight,
                    grad,
                    body,
                    span,
                }))
            }
            _ => None,
        }
    }

    fn params(&mut self, pair: Pair<Rule>) -> Vec<ParamDef> {
        let mut out = Vec::new();
        for p in pair.into_inner() {
            let span = self.span(&p);
            let mut inner = p.into_inner();
            let Some(name) = inner.next().map(|n| self.ident(n)) else {
                continue;
            };
            let mut ty = None;
            let mut default = None;
            for part in inner {
                match part.as_rule() {
                    Rule::type_ann => ty = self.type_ann(part),
                    _ => default = self.expr(part),
                }
            }
            out.push(ParamDef {
                name,
                ty,
                default,
                span,
            });
        }
        out
    }

    fn type_ann(&mut self, pair: Pair<Rule>) -> Option<TypeAnn> {
        let inner = pair.into_inner().next()?;
        match inner.as_rule() {
            Rule::ident => Some(TypeAnn::Scalar(self.ident(inner))),
            _ => self.tensor_type(inner),
        }
    }

    fn tensor_type(&mut self, pair: Pair<Rule>) -> Option<TypeAnn> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let dtype = self.ident(inner.next()?);
        let dims = inner.filter_map(|d| self.expr(d)).collect();
        Some(TypeAnn::Tensor { dtype, dims, span })
    }

    fn block(&mut self, pair: Pair<Rule>) -> Vec<Stmt> {
        let mut out = Vec::new();
        for s in pair.into_inner() {
            if let Some(stmt) = self.stmt(s) {
                out.push(stmt);
            }
        }
        out
    }

    fn stmt(&mut self, pair: Pair<Rule>) -> Option<Stmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        Some(match rule {
            Rule::assign => {
                let name = self.ident(inner.next()?);
                let value = self.expr(inner.next()?)?;
                Stmt::Assign { name, value, span }
            }
            Rule::param_decl | Rule::buffer_decl => {
                let trainable = rule == Rule::param_decl;
                let name = self.ident(inner.next()?);
                let ty = self.tensor_type(inner.next()?)?;
                let init = match inner.next() {
                    Some(e) => Some(self.expr(e)?),
                    None => None,
                };
                Stmt::Param {
                    trainable,
                    name,
                    ty,
                    init,
                    span,
                }
            }
            Rule::state_decl => {
                let name = self.ident(inner.next()?);
                let init = match inner.next() {
                    Some(e) => Some(self.expr(e)?),
                    None => None,
                };
                Stmt::State { name, init, span }
            }
            Rule::return_stmt => Stmt::Return {
                value: self.expr(inner.next()?)?,
                span,
            },
            Rule::for_stmt => {
                let var = self.ident(inner.next()?);
                let iter = self.expr(inner.next()?)?;
                let body = self.block(inner.next()?);
                Stmt::For {
                    var,
                    iter,
                    body,
                    span,
                }
            }
            Rule::yield_stmt => {
                let name = self.ident(inner.next()?);
                let value = self.expr(inner.next()?)?;
                Stmt::Yield { name, value, span }
            }
            Rule::grad_block => {
                let dy = self.ident(inner.next()?);
                let body = self.block(inner.next()?);
                Stmt::Grad { dy, body, span }
            }
            Rule::grad_assign => {
                let target = self.ident(inner.next()?);
                let value = self.expr(inner.next()?)?;
                Stmt::GradAssign {
                    target,
                    value,
                    span,
                }
            }
            Rule::if_stmt => {
                let cond = self.expr(inner.next()?)?;
                let then = self.block(inner.next()?);
                let els = match inner.next() {
                    None => Vec::new(),
                    Some(p) if p.as_rule() == Rule::if_block => {
                        p.into_inner().filter_map(|s| self.stmt(s)).collect()
                    }
                    Some(p) => self.block(p),
                };
                Stmt::If {
                    cond,
                    then,
                    els,
                    span,
                }
            }
            _ => return None,
        })
    }

    /// Builds an expression; `None` when an error was recorded.
    fn expr(&mut self, pair: Pair<Rule>) -> Option<Expr> {
        debug_assert_eq!(pair.as_rule(), Rule::expr);
        let span = self.span(&pair);
        // Bound the depth of the tree the Pratt parser will build (and recurse over).
        let mut ops = 0;
        let mut run = 0;
        for p in pair.clone().into_inner() {
            match p.as_rule() {
                Rule::neg => {
                    run += 1;
                    ops += 1;
                }
                Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::matmul | Rule::pow => {
                    run = 0;
                    ops += 1;
                }
                _ => run = 0,
            }
            if ops > MAX_OPERATORS || run > MAX_NESTING {
                self.errors.push(crate::errors::too_long(span, ops));
                return None;
            }
        }
        self.pratt_expr(pair.into_inner())
    }

    fn pratt_expr(&mut self, pairs: Pairs<Rule>) -> Option<Expr> {
        let cx = std::cell::RefCell::new(self);
        PRATT
            .map_primary(|p| cx.borrow_mut().primary(p))
            .map_prefix(|op, rhs| {
                let rhs = rhs?;
                let span = cx.borrow().span(&op).to(rhs.span);
                Some(Expr {
                    kind: ExprKind::Neg(Box::new(rhs)),
                    span,
                })
            })
            .map_infix(|lhs, op, rhs| {
                let (lhs, rhs) = (lhs?, rhs?);
                let op = match op.as_rule() {
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    Rule::div => BinOp::Div,
                    Rule::matmul => BinOp::MatMul,
                    Rule::lt => BinOp::Lt,
                    Rule::le => BinOp::Le,
                    Rule::gt => BinOp::Gt,
                    Rule::ge => BinOp::Ge,
                    Rule::eq => BinOp::Eq,
                    Rule::ne => BinOp::Ne,
                    _ => BinOp::Pow,
                };
                let span = lhs.span.to(rhs.span);
                Some(Expr {
                    kind: ExprKind::Binary {
                        op,
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    },
                    span,
                })
            })
            .parse(pairs)
    }

    fn primary(&mut self, pair: Pair<Rule>) -> Option<Expr> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::number => match number(pair.as_str()) {
                Ok(k) => k,
                Err(why) => {
                    self.errors
                        .push(crate::errors::bad_literal(span, pair.as_str(), why));
                    return None;
                }
            },
            Rule::string => {
                let s = pair.as_str();
                ExprKind::Str(s[1..s.len() - 1].to_string())
            }
            Rule::ident => ExprKind::Name(pair.as_str().to_string()),
            Rule::paren => ExprKind::Paren(Box::new(self.expr(pair.into_inner().next()?)?)),
            Rule::list => {
                let mut items = Vec::new();
                for e in pair.into_inner() {
                    items.push(self.expr(e)?);
                }
                ExprKind::List(items)
            }
            Rule::call => {
                let mut inner = pair.into_inner();
                let callee = self.ident(inner.next()?);
                let mut args = Vec::new();
                for a in inner {
                    let mut parts: Vec<Pair<Rule>> = a.into_inner().collect();
                    let value = self.expr(parts.pop()?)?;
                    let name = parts.pop().map(|n| self.ident(n));
                    args.push(Arg { name, value });
                }
                ExprKind::Call { callee, args }
            }
            _ => return None,
        };
        Some(Expr { kind, span })
    }
}

/// Validates a scanned number: an integer (no `.` or exponent) or a float.
fn number(text: &str) -> Result<ExprKind, &'static str> {
    let is_float = text.contains('.') || text.contains(['e', 'E']);
    if !text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return Err("a number holds only digits, `.` and an exponent");
    }
    if is_float {
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(ExprKind::Float(v)),
            Ok(_) => Err("the value does not fit in a 64-bit float"),
            Err(_) => Err("not a valid number"),
        }
    } else {
        text.parse::<i64>()
            .map(ExprKind::Int)
            .map_err(|_| "the integer does not fit in 64 bits")
    }
}
