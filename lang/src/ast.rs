//! The syntax tree: what the grammar recognized, with a span on every node.
//!
//! Nothing here is checked yet; `check` resolves names and computes types.

use crate::diagnostics::Span;

/// A parsed source file.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Top-level definitions in source order.
    pub items: Vec<Item>,
}

/// A top-level definition.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `layer name(...) -> T { ... }`: a reusable block.
    Layer(FnDef),
    /// `model Name(...) -> T { ... }`: a network with typed inputs.
    Model(FnDef),
    /// `train Name(...) { key = value ... }`: how a model learns.
    Train(TrainDef),
    /// `rule name(hyper = default, ...) for (w, g) { ... }`: an optimizer update.
    Rule(RuleDef),
}

impl Item {
    /// The defined name.
    pub fn name(&self) -> &Ident {
        match self {
            Item::Layer(f) | Item::Model(f) => &f.name,
            Item::Train(t) => &t.model,
            Item::Rule(r) => &r.name,
        }
    }
}

/// A name with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    /// The text.
    pub name: String,
    /// Where it is.
    pub span: Span,
}

/// A layer or model definition.
#[derive(Clone, Debug, PartialEq)]
pub struct FnDef {
    /// Its name.
    pub name: Ident,
    /// Its parameters (inputs, static arguments).
    pub params: Vec<ParamDef>,
    /// The declared result type.
    pub ret: Option<TypeAnn>,
    /// The body.
    pub body: Vec<Stmt>,
    /// The whole definition.
    pub span: Span,
}

/// A train block.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainDef {
    /// The model it trains.
    pub model: Ident,
    /// Extra inputs (labels).
    pub params: Vec<ParamDef>,
    /// Settings, as assignments.
    pub body: Vec<Stmt>,
    /// The whole block.
    pub span: Span,
}

/// An optimizer rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleDef {
    /// Its name.
    pub name: Ident,
    /// Hyperparameters with defaults.
    pub params: Vec<ParamDef>,
    /// The name of the parameter being updated.
    pub weight: Ident,
    /// The name of its gradient.
    pub grad: Ident,
    /// The update, in order.
    pub body: Vec<Stmt>,
    /// The whole rule.
    pub span: Span,
}

/// A formal parameter: `x: f32[B, 64]`, `units: int`, `lr = 1e-3`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDef {
    /// Its name.
    pub name: Ident,
    /// Its type, if written.
    pub ty: Option<TypeAnn>,
    /// Its default, if any.
    pub default: Option<Expr>,
    /// The whole parameter.
    pub span: Span,
}

/// A type annotation.
#[derive(Clone, Debug, PartialEq)]
pub enum TypeAnn {
    /// `f32[B, 64]`.
    Tensor {
        /// The element type name.
        dtype: Ident,
        /// The dimensions, each a static expression.
        dims: Vec<Expr>,
        /// The whole annotation.
        span: Span,
    },
    /// `int`, `float`, `bool`.
    Scalar(Ident),
}

impl TypeAnn {
    /// The span of the whole annotation.
    pub fn span(&self) -> Span {
        match self {
            TypeAnn::Tensor { span, .. } => *span,
            TypeAnn::Scalar(i) => i.span,
        }
    }
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `name = expr`.
    Assign {
        /// The bound name.
        name: Ident,
        /// The value.
        value: Expr,
        /// The statement.
        span: Span,
    },
    /// `param name: T = init`, or `buffer name: T = init` (not trained).
    Param {
        /// `param` (true) or `buffer` (false).
        trainable: bool,
        /// The parameter's name.
        name: Ident,
        /// Its type.
        ty: TypeAnn,
        /// Its initializer.
        init: Option<Expr>,
        /// The statement.
        span: Span,
    },
    /// `state name = init`, in rules.
    State {
        /// The state's name.
        name: Ident,
        /// Its initializer.
        init: Option<Expr>,
        /// The statement.
        span: Span,
    },
    /// `return expr`.
    Return {
        /// The returned value.
        value: Expr,
        /// The statement.
        span: Span,
    },
    /// `for i in n { .. }`: the body unrolled for `i` = 0, 1, .., n - 1 (or each item of
    /// a list).
    For {
        /// The loop variable.
        var: Ident,
        /// A static count or list.
        iter: Expr,
        /// The repeated statements.
        body: Vec<Stmt>,
        /// The statement.
        span: Span,
    },
    /// `grad (dy) { .. }`: the layer's own backward, from the adjoint `dy` of its result.
    Grad {
        /// The name its statements give the result's adjoint.
        dy: Ident,
        /// Assignments of locals and of adjoints (`x.grad = ..`).
        body: Vec<Stmt>,
        /// The whole block.
        span: Span,
    },
    /// `x.grad = expr`, in a grad block: the adjoint of input or parameter `x`.
    GradAssign {
        /// The input or parameter.
        target: Ident,
        /// Its adjoint.
        value: Expr,
        /// The statement.
        span: Span,
    },
    /// `yield name = expr` in a `steps` loop: one step of an output, stacked into `name`
    /// along the sequence axis after the loop.
    Yield {
        /// The stacked output's name.
        name: Ident,
        /// This step's value.
        value: Expr,
        /// The statement.
        span: Span,
    },
    /// `if c { .. } else { .. }` on a static condition: only the taken branch is built.
    If {
        /// The condition (a static boolean or integer).
        cond: Expr,
        /// Statements when it holds.
        then: Vec<Stmt>,
        /// Statements otherwise (empty without `else`).
        els: Vec<Stmt>,
        /// The statement.
        span: Span,
    },
}

impl Stmt {
    /// Every expression of the statement, nested blocks included.
    pub fn exprs<'a>(&'a self, out: &mut Vec<&'a Expr>) {
        match self {
            Stmt::Assign { value, .. }
            | Stmt::Return { value, .. }
            | Stmt::Yield { value, .. }
            | Stmt::GradAssign { value, .. } => out.push(value),
            Stmt::Grad { body, .. } => body.iter().for_each(|s| s.exprs(out)),
            Stmt::Param { init, .. } | Stmt::State { init, .. } => out.extend(init.iter()),
            Stmt::For { iter, body, .. } => {
                out.push(iter);
                body.iter().for_each(|s| s.exprs(out));
            }
            Stmt::If {
                cond, then, els, ..
            } => {
                out.push(cond);
                then.iter().chain(els).for_each(|s| s.exprs(out));
            }
        }
    }

    /// The span of the whole statement.
    pub fn span(&self) -> Span {
        match self {
            Stmt::Assign { span, .. }
            | Stmt::Param { span, .. }
            | Stmt::State { span, .. }
            | Stmt::Return { span, .. }
            | Stmt::For { span, .. }
            | Stmt::Grad { span, .. }
            | Stmt::GradAssign { span, .. }
            | Stmt::Yield { span, .. }
            | Stmt::If { span, .. } => *span,
        }
    }
}

/// An expression with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
}

/// The kinds of expression.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// An integer literal.
    Int(i64),
    /// A float literal (has a `.` or an exponent).
    Float(f64),
    /// A string literal, without its quotes.
    Str(String),
    /// A name.
    Name(String),
    /// `f(a, b, key = c)`.
    Call {
        /// The called name.
        callee: Ident,
        /// Its arguments.
        args: Vec<Arg>,
    },
    /// `-x`.
    Neg(Box<Expr>),
    /// `a op b`.
    Binary {
        /// The operator.
        op: BinOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `[a, b]`.
    List(Vec<Expr>),
    /// `(x)`, kept so the printer can reproduce it.
    Paren(Box<Expr>),
}

/// A call argument, positional or `key = value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// The keyword, if any.
    pub name: Option<Ident>,
    /// The value.
    pub value: Expr,
}

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `@`
    MatMul,
    /// `^`
    Pow,
    /// `<`: 1 where true, 0 where false (the `lt` primitive); binds loosest.
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl BinOp {
    /// The operator's spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::MatMul => "@",
            BinOp::Pow => "^",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
        }
    }
}
