//! The table of primitive ops: every op the compiler knows, once.
//!
//! Each row gives the op's mnemonic (used by the printer, the parser and the language's
//! built-in functions), its arity, the attribute it carries, how its result type is found,
//! and a one-line doc. `Op::result_type` is the one type and shape rule for each op: the
//! front end's checker and the IR verifier both call it, so they cannot disagree.
//!
//! Elementwise ops take operands of exactly equal type: broadcasting is made explicit by the
//! front end (`broadcast`), which keeps every gradient rule and kernel simple.

use crate::Error;

use crate::types::{DType, Dim, Shape, TensorType};

/// The element types an op accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypes {
    /// Any element type.
    Any,
    /// Float operands only (`exp`, `mean`, ...).
    Float,
}

/// How the language calls an op: its keyword parameters in order, and how many of them
/// are required (the rest are optional attributes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    /// Not callable by name: `broadcast` and `const` are implicit (mixed shapes,
    /// literals), `random(shape)` is the language's own built-in.
    None,
    /// `mnemonic(params...)`, the first `required` of them required.
    Call(&'static [&'static str], usize),
}

/// How the backends compute an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lowering {
    /// Elementwise, computed in registers inside a fused loop (`nnc_jit::emit`). A
    /// `cheap` op (one instruction) may be recomputed inside every loop that reads it;
    /// others are stored once when several loops read them.
    Fused {
        /// One instruction.
        cheap: bool,
    },
    /// A call of a run-time kernel (`nnc-rt`), with a descriptor of its sizes.
    Kernel,
    /// No code: the result shares its operand's buffer.
    Alias,
    /// Never reaches a backend: autodiff reads it, and the simplifier removes it before
    /// code is generated (a layer's own backward, `grad` blocks).
    Erased,
}

/// The scalar definition of an elementwise op: the result from the operands' values, in
/// f64, before rounding to `dtype` (the interpreter, the simplifier's constant folding and
/// the front end's static folding all call it).
pub type Scalar = fn(&[f64], DType) -> f64;

/// One row of the op table.
#[derive(Debug)]
pub struct OpInfo {
    /// The op.
    pub op: Op,
    /// Spelling in the IR and name of the language built-in.
    pub mnemonic: &'static str,
    /// Number of tensor operands.
    pub arity: usize,
    /// The family, which decides the type rule.
    pub class: Class,
    /// The element types it accepts.
    pub dtypes: DTypes,
    /// The attribute it carries.
    pub attr: AttrKind,
    /// How the language calls it.
    pub sig: Sig,
    /// How the backends compute it.
    pub lowering: Lowering,
    /// Its scalar definition, if it is elementwise.
    pub scalar: Option<Scalar>,
    /// What it computes.
    pub doc: &'static str,
}

macro_rules! table {
    ($($op:ident $mn:literal $arity:literal $class:ident $dtypes:ident $attr:ident
       [$($param:literal),*] $req:literal $lowering:expr, $scalar:expr, $doc:literal;)*) => {
        /// A primitive op. Attributes (axes, permutations, constants) live in [`Attr`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Op {
            $(#[doc = $doc] $op,)*
        }

        /// Every primitive op, in `Op` order.
        pub static TABLE: &[OpInfo] = &[
            $(OpInfo {
                op: Op::$op,
                mnemonic: $mn,
                arity: $arity,
                class: Class::$class,
                dtypes: DTypes::$dtypes,
                attr: AttrKind::$attr,
                sig: sig(&[$($param),*], $req),
                lowering: $lowering,
                scalar: $scalar,
                doc: $doc,
            },)*
        ];
    };
}

const fn sig(params: &'static [&'static str], required: usize) -> Sig {
    if params.is_empty() {
        Sig::None
    } else {
        Sig::Call(params, required)
    }
}

const CHEAP: Lowering = Lowering::Fused { cheap: true };
const COSTLY: Lowering = Lowering::Fused { cheap: false };
const KERNEL: Lowering = Lowering::Kernel;
const ALIAS: Lowering = Lowering::Alias;
const ERASED: Lowering = Lowering::Erased;

fn bit(c: bool) -> f64 {
    if c { 1.0 } else { 0.0 }
}

// The rows. A new op is one row here, then whatever the compiler asks for: its gradient
// (`vjp`), its gradcheck cases, its lowering (`nnc_jit::emit` for a fused op, `program` for
// a kernel), and its interpreter arm if it is not elementwise. ARCHITECTURE.md lists them.
table! {
    // op     mnemonic  arity class   dtypes attr   params                      required lowering, scalar, doc
    Neg       "neg"        1 Unary     Any   None   ["x"] 1 CHEAP, Some(|a, _| -a[0]), "negation: -x";
    Abs       "abs"        1 Unary     Any   None   ["x"] 1 CHEAP, Some(|a, _| a[0].abs()), "absolute value: |x|";
    Sign      "sign"       1 Unary     Any   None   ["x"] 1 CHEAP, Some(|a, _| bit(a[0] > 0.0) - bit(a[0] < 0.0)), "sign: -1, 0 or 1 (0 for NaN)";
    Exp       "exp"        1 Unary     Float None   ["x"] 1 COSTLY, Some(|a, _| a[0].exp()), "exponential: e^x";
    Log       "log"        1 Unary     Float None   ["x"] 1 COSTLY, Some(|a, _| a[0].ln()), "natural logarithm: ln x";
    Sqrt      "sqrt"       1 Unary     Float None   ["x"] 1 COSTLY, Some(|a, _| a[0].sqrt()), "square root";
    Tanh      "tanh"       1 Unary     Float None   ["x"] 1 COSTLY, Some(|a, _| a[0].tanh()), "hyperbolic tangent";
    // A primitive, not 1 / (1 + exp(-x)) in the prelude: its derivative y (1 - y) reads
    // only its result, so a gate saves one value for the backward pass instead of three.
    Sigmoid   "sigmoid"    1 Unary     Float None   ["x"] 1 COSTLY, Some(|a, _| 1.0 / (1.0 + (-a[0]).exp())), "logistic sigmoid: 1 / (1 + e^-x)";
    Sin       "sin"        1 Unary     Float None   ["x"] 1 COSTLY, Some(|a, _| a[0].sin()), "sine (radians)";
    Cos       "cos"        1 Unary     Float None   ["x"] 1 COSTLY, Some(|a, _| a[0].cos()), "cosine (radians)";
    // The identity forward, no gradient back: what learning rules built in the language use.
    StopGradient "stop_gradient" 1 Unary Float None ["x"] 1 ALIAS, Some(|a, _| a[0]), "the operand unchanged; autodiff sends no gradient through it";
    Erf       "erf"        1 Unary     Float None   ["x"] 1 COSTLY, Some(|a, _| libm::erf(a[0])), "error function: 2/sqrt(pi) times the integral of e^(-t^2) from 0 to x";
    Add       "add"        2 Binary    Any   None   ["x", "y"] 2 CHEAP, Some(|a, _| a[0] + a[1]), "sum: x + y";
    Sub       "sub"        2 Binary    Any   None   ["x", "y"] 2 CHEAP, Some(|a, _| a[0] - a[1]), "difference: x - y";
    Mul       "mul"        2 Binary    Any   None   ["x", "y"] 2 CHEAP, Some(|a, _| a[0] * a[1]), "product: x * y";
    // Integer division truncates toward zero, and x / 0 is 0 (a kernel, not a fused loop).
    Div       "div"        2 Binary    Any   None   ["x", "y"] 2 COSTLY, Some(div), "quotient: x / y";
    // y where x < y, else x: one select on one comparison, so a NaN in x stays and one in y does not.
    Max       "max"        2 Binary    Any   None   ["x", "y"] 2 CHEAP, Some(|a, _| if a[0] < a[1] { a[1] } else { a[0] }), "elementwise maximum";
    Min       "min"        2 Binary    Any   None   ["x", "y"] 2 CHEAP, Some(|a, _| if a[1] < a[0] { a[1] } else { a[0] }), "elementwise minimum";
    Pow       "pow"        2 Binary    Any   None   ["x", "y"] 2 KERNEL, Some(|a, _| a[0].powf(a[1])), "power: x ^ y";
    Lt        "lt"         2 Compare   Any   None   ["x", "y"] 2 CHEAP, Some(|a, _| bit(a[0] < a[1])), "1 where x < y, else 0";
    Le        "le"         2 Compare   Any   None   ["x", "y"] 2 CHEAP, Some(|a, _| bit(a[0] <= a[1])), "1 where x <= y, else 0";
    Gt        "gt"         2 Compare   Any   None   ["x", "y"] 2 CHEAP, Some(|a, _| bit(a[0] > a[1])), "1 where x > y, else 0";
    Ge        "ge"         2 Compare   Any   None   ["x", "y"] 2 CHEAP, Some(|a, _| bit(a[0] >= a[1])), "1 where x >= y, else 0";
    Eq        "eq"         2 Compare   Any   None   ["x", "y"] 2 CHEAP, Some(|a, _| bit(a[0] == a[1])), "1 where x == y, else 0";
    Ne        "ne"         2 Compare   Any   None   ["x", "y"] 2 CHEAP, Some(|a, _| bit(a[0] != a[1])), "1 where x != y, else 0";
    Select    "select"     3 Select    Any   None   ["c", "a", "b"] 3 CHEAP, Some(|a, _| if a[0] != 0.0 { a[1] } else { a[2] }), "a where c != 0, else b";
    Sum       "sum"        1 Reduce    Any   Axes   ["x", "axis", "keepdims"] 1 KERNEL, None, "sum over the listed axes, which are removed";
    Mean      "mean"       1 Reduce    Float Axes   ["x", "axis", "keepdims"] 1 KERNEL, None, "mean over the listed axes, which are removed";
    ReduceMax "reduce_max" 1 Reduce    Any   Axes   ["x", "axis", "keepdims"] 1 KERNEL, None, "maximum over the listed axes, which are removed";
    MatMul    "matmul"     2 MatMul    Float None   ["x", "y"] 2 KERNEL, None, "matrix product over the last two axes, batched over the rest (a rank-2 operand is shared by the batch)";
    Broadcast "broadcast"  1 Given     Any   Dims   [] 0 KERNEL, None, "copies the operand along new axes; operand axis i becomes result axis dims[i]";
    Reshape   "reshape"    1 Given     Any   None   ["x", "shape"] 2 ALIAS, None, "the same elements in row-major order, in a new shape";
    Transpose "transpose"  1 Transpose Any   Perm   ["x", "perm"] 1 KERNEL, None, "permutes axes: result axis i is operand axis perm[i]";
    Const     "const"      0 Given     Any   Value  [] 0 CHEAP, None, "a tensor filled with one value";
    // Float to int is a kernel (truncation); the other casts share their operand's buffer.
    Cast      "cast"       1 Given     Any   None   ["x", "dtype"] 2 ALIAS, None, "converts the element type (float to int truncates toward zero)";
    OneHot    "one_hot"    1 Given     Any   None   ["labels", "classes"] 2 KERNEL, None, "i32 labels [..] to 0/1 floats [.., N]; labels outside 0..N give all zeros";
    Im2col    "im2col"     1 Given     Float Window ["x", "kernel", "stride", "padding"] 2 KERNEL, None, "[N, C, H, W] to windows [N, C, KH, KW, OH, OW]; outside the image reads 0";
    Col2im    "col2im"     1 Given     Float Window ["x", "size", "kernel", "stride", "padding"] 3 KERNEL, None, "the adjoint of im2col: windows [N, C, KH, KW, OH, OW] summed back into [N, C, H, W]";
    Slice     "slice"      1 Given     Any   Offset ["x", "start", "end", "axis"] 3 KERNEL, None, "the elements from index start on along axis, as many as the result has";
    Pad       "pad"        1 Given     Any   Offset ["x", "before", "after", "axis"] 3 KERNEL, None, "zeros of the result's shape with the operand placed at index start along axis";
    Iota      "iota"       0 Given     Any   Axes   ["shape", "axis"] 2 KERNEL, None, "each element's index along the one listed axis";
    // Variadic: one or more operands (the arity is the least).
    Concat    "concat"     1 Concat    Any   Axis   ["xs", "axis"] 1 KERNEL, None, "the operands joined along axis (equal elsewhere); the adjoint of each is a slice";
    Gather    "gather"     2 Given     Any   Index  ["x", "ids", "axis"] 2 KERNEL, None, "rows of x along axis picked by i32 ids: [..a, V, ..b] and ids [..i] give [..a, ..i, ..b]; an id outside 0..V is a run-time error naming the line";
    ScatterAdd "scatter_add" 2 Given   Float Index  ["x", "ids", "size", "axis"] 3 KERNEL, None, "the adjoint of gather: x [..a, ..i, ..b] summed into rows ids of zeros [..a, V, ..b]";
    Random    "random"     1 Given     Any   Value  [] 0 KERNEL, None, "uniform noise in [0, 1): a hash of the key operand (i32[]), the stream (value) and each element's index";
    // A layer's own backward (a `grad` block): `custom_grad` returns y unchanged and lists,
    // for each primal operand, the adjoint autodiff gives it, computed from a `cotangent`
    // (which stands for y's adjoint; autodiff substitutes the real one).
    Cotangent "cotangent"  0 Given     Float None   [] 0 ERASED, None, "the adjoint of a custom_grad's result, as seen by its backward (zeros when evaluated)";
    CustomGrad "custom_grad" 2 CustomGrad Float None [] 0 ERASED, None, "custom_grad y, dy, x1, dx1, ..: y unchanged; autodiff gives each xk the adjoint dxk, computed from the cotangent dy, instead of differentiating y";
    // A structured loop (`lax.scan`): operands are the carries' initial values, the
    // sequences (stepped along axis 0) and the constants; the body maps (carries, one step
    // of each sequence, constants) to (new carries, one step of each output). Its results,
    // read with `scan_out`, are the final carries and the outputs stacked along axis 0.
    Scan      "scan"       1 Scan      Any   Loop   [] 0 KERNEL, None, "a loop over axis 0 of its sequences: body(carries, steps, constants) -> (carries, steps); results by scan_out";
    ScanOut   "scan_out"   1 Given     Any   Output [] 0 ALIAS, None, "result k of a scan: a final carry, or an output stacked along axis 0";
    // What the front end stands in for a loop body's operands while it elaborates the body
    // in place; it outlines the body into a scan before the IR leaves it.
    LoopVar   "loop_var"   0 Given     Any   None   [] 0 ERASED, None, "an operand of a loop body being built (never in finished IR)";
    // Scaled dot-product attention as one op (PyTorch's scaled_dot_product_attention): the
    // scores are never stored, so memory is O(T), not O(T^2), and a causal mask skips the
    // masked half instead of computing it. The scale is 1 / sqrt(d).
    Attention "attention"  3 Attention Float Causal ["q", "k", "v", "causal"] 3 KERNEL, None, "softmax(q k^T / sqrt(d)) v over the last two axes of q [.., Tq, d], k and v [.., Tk, d], batched over the rest; with causal, query i sees keys j <= i";
    // Its adjoint: the scores recomputed row by row, the three gradients in one result.
    AttentionGrad "attention_grad" 5 Attention Float Causal [] 0 KERNEL, None, "the adjoints of attention(q, k, v) = o for the adjoint dy of o: dq, dk and dv joined along axis -2 ([.., Tq + 2 Tk, d]), from q, k, v, o and dy";
}

/// The type rule of `attention` and `attention_grad`.
fn attention_type(op: Op, args: &[&TensorType]) -> Result<TensorType, Error> {
    let (q, k, v) = (args[0], args[1], args[2]);
    let r = q.rank();
    let fits = r >= 2
        && k.rank() == r
        && v == k
        && q.dtype == k.dtype
        && q.shape.0[..r - 2] == k.shape.0[..r - 2]
        && q.shape.0[r - 1] == k.shape.0[r - 1];
    if !fits {
        return Err(Error::Type(format!(
            "`{}` needs q [.., Tq, d] and k, v of one type [.., Tk, d], found {q}, {k} and {v}",
            op.mnemonic()
        )));
    }
    if op == Op::Attention {
        return Ok(q.clone());
    }
    if args[3] != q || args[4] != q {
        return Err(Error::Type(format!(
            "`attention_grad` needs o and dy of q's type {q}, found {} and {}",
            args[3], args[4]
        )));
    }
    let (Some(tq), Some(tk)) = (q.shape.0[r - 2].known(), k.shape.0[r - 2].known()) else {
        return Err(Error::Type(format!(
            "`attention_grad` needs known sequence lengths, found {q} and {k}"
        )));
    };
    let mut dims = q.shape.0.clone();
    dims[r - 2] = Dim::Known(tq + 2 * tk);
    Ok(TensorType::new(q.dtype, Shape(dims)))
}

fn div(a: &[f64], dtype: DType) -> f64 {
    if dtype == DType::I32 {
        if a[1] == 0.0 {
            0.0
        } else {
            (a[0] / a[1]).trunc()
        }
    } else {
        a[0] / a[1]
    }
}

/// Which family an op belongs to; decides its type rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `f(x)`, elementwise, result type = operand type.
    Unary,
    /// `f(x, y)`, elementwise, operands and result of one type.
    Binary,
    /// `x < y` and friends: 1 where true, 0 where false, in the operands' type.
    Compare,
    /// `select c, a, b`: `a` where `c != 0`, else `b`.
    Select,
    /// Reduces the listed axes away.
    Reduce,
    /// `[.., M, K] x [.., K, N] -> [.., M, N]`.
    MatMul,
    /// The result type is written on the node and checked against the operands.
    Given,
    /// Permutes the axes.
    Transpose,
    /// Joins one or more operands along an axis (variadic).
    Concat,
    /// `custom_grad y, dy, (x, dx)*`: the type of `y`; `dy` has it too, each `dx` its `x`'s.
    CustomGrad,
    /// A structured loop: the body's signature is checked against the operands; the node's
    /// own type is `LOOP_TYPE` (its results are `scan_out` nodes).
    Scan,
    /// `attention q, k, v` (`[.., Tq, d]`, `[.., Tk, d]` twice) and its adjoint, which also
    /// takes `o` and `dy` (both `q`'s type) and gives `[.., Tq + 2 Tk, d]`.
    Attention,
}

/// The kind of attribute an op carries, and how it is spelled in the IR text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// No attribute.
    None,
    /// `axes=[1, 2]`: sorted, distinct axes of the operand.
    Axes,
    /// `dims=[0, 1]`: where each operand axis lands in the result (broadcast).
    Dims,
    /// `perm=[1, 0]`: result axis `i` is operand axis `perm[i]`.
    Perm,
    /// `value=0.5`: the fill value of a constant.
    Value,
    /// `kernel=[3, 3], stride=[1, 1], pad=[0, 0]`: a 2-D sliding window.
    Window,
    /// `axis=1, start=2`: where a slice starts, or where padding puts its operand.
    Offset,
    /// `axis=1`: one axis.
    Axis,
    /// `axis=0, line=12`: the indexed axis of a gather or scatter, and the source line
    /// that run-time index errors name (0: none).
    Index,
    /// `carries=2, sequences=1, reverse=0` and the body function, printed after the node.
    Loop,
    /// `output=1`: which result of a scan.
    Output,
    /// `causal=1`: whether attention masks the keys after each query.
    Causal,
}

/// The attribute of one op instance.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// No attribute.
    None,
    /// Axes of a reduction.
    Axes(Vec<usize>),
    /// Axis map of a broadcast.
    Dims(Vec<usize>),
    /// Axis permutation of a transpose.
    Perm(Vec<usize>),
    /// Fill value of a constant.
    Value(f64),
    /// A 2-D sliding window over the last two axes.
    Window {
        /// Window height and width.
        kernel: [usize; 2],
        /// Step between windows, per axis.
        stride: [usize; 2],
        /// Zeros added on both sides, per axis.
        pad: [usize; 2],
    },
    /// One axis (concat's).
    Axis(usize),
    /// The indexed axis of a gather or scatter.
    Index {
        /// The axis of the table.
        axis: usize,
        /// The source line run-time errors name (0 where there is none).
        line: usize,
    },
    /// A position along one axis.
    Offset {
        /// The axis.
        axis: usize,
        /// The first index.
        start: usize,
    },
    /// A scan's body and the division of its operands.
    Loop(Box<crate::graph::Loop>),
    /// Which result of a scan a `scan_out` reads.
    Output(usize),
    /// Whether attention is causal.
    Causal(bool),
}

impl OpInfo {
    /// Whether the op takes any number of operands from its arity on.
    pub fn is_variadic(&self) -> bool {
        matches!(self.class, Class::Concat | Class::CustomGrad | Class::Scan)
    }
}

impl Op {
    /// This op's row in the table.
    pub fn info(self) -> &'static OpInfo {
        let info = &TABLE[self as usize];
        debug_assert_eq!(info.op, self);
        info
    }

    /// The op's mnemonic.
    pub fn mnemonic(self) -> &'static str {
        self.info().mnemonic
    }

    /// Looks an op up by mnemonic.
    pub fn from_mnemonic(name: &str) -> Option<Op> {
        TABLE
            .iter()
            .find(|row| row.mnemonic == name)
            .map(|row| row.op)
    }

    /// True for ops that compute each output element from the same element of each operand.
    pub fn is_elementwise(self) -> bool {
        matches!(
            self.info().class,
            Class::Unary | Class::Binary | Class::Compare | Class::Select
        )
    }

    /// The type rule. `given` is the type written on the node; ops of class `Given` need
    /// it, the others compute their type and ignore it. Errors are messages a person can
    /// act on, naming the concrete types.
    pub fn result_type(
        self,
        args: &[&TensorType],
        attr: &Attr,
        given: Option<&TensorType>,
    ) -> Result<TensorType, Error> {
        let info = self.info();
        let variadic = info.is_variadic();
        if args.len() != info.arity && !(variadic && args.len() >= info.arity) {
            return Err(Error::Type(format!(
                "`{}` takes {} operand{}, found {}",
                info.mnemonic,
                info.arity,
                if info.arity == 1 { "" } else { "s" },
                args.len()
            )));
        }
        check_attr_kind(info, attr)?;
        let ty = match info.class {
            Class::Unary => Ok(args[0].clone()),
            Class::Binary | Class::Compare => {
                let (x, y) = (args[0], args[1]);
                if x != y {
                    return Err(Error::Type(format!(
                        "operands of `{}` differ: {x} and {y}",
                        info.mnemonic
                    )));
                }
                Ok(x.clone())
            }
            Class::Select => {
                let (c, a, b) = (args[0], args[1], args[2]);
                if a != b {
                    return Err(Error::Type(format!(
                        "branches of `select` differ: {a} and {b}"
                    )));
                }
                if c.shape != a.shape {
                    return Err(Error::Type(format!(
                        "condition of `select` is {c}, branches are {a}"
                    )));
                }
                Ok(a.clone())
            }
            Class::Reduce => {
                let x = args[0];
                let Attr::Axes(axes) = attr else {
                    unreachable!("checked by check_attr_kind")
                };
                check_axes(axes, x.rank(), "axes")?;
                let dims = x
                    .shape
                    .dims()
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, d)| d.clone())
                    .collect();
                Ok(TensorType::new(x.dtype, Shape(dims)))
            }
            Class::MatMul => matmul_type(args[0], args[1]),
            Class::Concat => {
                let Attr::Axis(axis) = *attr else {
                    unreachable!("checked by check_attr_kind")
                };
                let x = args[0];
                if axis >= x.rank() {
                    return Err(Error::Type(format!("axis={axis} out of range for {x}")));
                }
                let mut total = 0u64;
                for a in args {
                    let same = a.dtype == x.dtype
                        && a.rank() == x.rank()
                        && (0..x.rank()).all(|k| k == axis || a.shape.0[k] == x.shape.0[k]);
                    let Some(n) = a.shape.0.get(axis).and_then(Dim::known).filter(|_| same) else {
                        return Err(Error::Type(format!(
                            "`concat` at axis={axis} needs operands equal but for a known axis {axis}: {x} and {a}"
                        )));
                    };
                    total = total.saturating_add(n);
                }
                let mut dims = x.shape.0.clone();
                dims[axis] = Dim::Known(total);
                Ok(TensorType::new(x.dtype, Shape(dims)))
            }
            Class::CustomGrad => {
                let (y, dy) = (args[0], args[1]);
                if dy != y || !args.len().is_multiple_of(2) {
                    return Err(Error::Type(format!(
                        "`custom_grad` takes y, its cotangent of the same type, then pairs of an operand and its adjoint; found {} operands, y {y}, dy {dy}",
                        args.len()
                    )));
                }
                for pair in args[2..].chunks(2) {
                    if pair[0] != pair[1] {
                        return Err(Error::Type(format!(
                            "an adjoint must have its operand's type: {} for {}",
                            pair[1], pair[0]
                        )));
                    }
                }
                Ok(y.clone())
            }
            Class::Scan => {
                let Attr::Loop(l) = attr else {
                    unreachable!("checked by check_attr_kind")
                };
                l.check(args)?;
                Ok(LOOP_TYPE.clone())
            }
            Class::Attention => attention_type(self, args),
            Class::Transpose => {
                let x = args[0];
                let Attr::Perm(perm) = attr else {
                    unreachable!("checked by check_attr_kind")
                };
                if perm.len() != x.rank() || !is_permutation(perm) {
                    return Err(Error::Type(format!(
                        "perm={perm:?} is not a permutation of the {} axes of {x}",
                        x.rank()
                    )));
                }
                let dims = perm.iter().map(|&p| x.shape.0[p].clone()).collect();
                Ok(TensorType::new(x.dtype, Shape(dims)))
            }
            Class::Given => {
                let Some(ty) = given else {
                    return Err(Error::Type(format!(
                        "`{}` needs its result type written out",
                        info.mnemonic
                    )));
                };
                self.check_given(args, attr, ty)?;
                Ok(ty.clone())
            }
        }?;
        if info.dtypes == DTypes::Float && args.first().is_some_and(|x| !x.dtype.is_float()) {
            return Err(Error::Type(format!(
                "`{}` needs a float operand, found {}",
                info.mnemonic, args[0]
            )));
        }
        Ok(ty)
    }

    /// The scalar value of an elementwise op on operand values (`None` for the other
    /// ops), in f64 before rounding to `dtype`.
    pub fn scalar(self, args: &[f64], dtype: DType) -> Option<f64> {
        self.info().scalar.map(|f| f(args, dtype))
    }

    /// The type rule of ops whose result type is written on the node.
    fn check_given(self, args: &[&TensorType], attr: &Attr, ty: &TensorType) -> Result<(), Error> {
        match self {
            Op::Broadcast => {
                let x = args[0];
                let Attr::Dims(dims) = attr else {
                    unreachable!()
                };
                if dims.len() != x.rank() {
                    return Err(Error::Type(format!(
                        "dims={dims:?} must list one result axis per axis of {x}"
                    )));
                }
                check_axes(dims, ty.rank(), "dims")?;
                if x.dtype != ty.dtype {
                    return Err(Error::Type(format!(
                        "cannot broadcast {x} to {ty}: element types differ"
                    )));
                }
                for (i, &d) in dims.iter().enumerate() {
                    if x.shape.0[i] != ty.shape.0[d] {
                        return Err(Error::Type(format!(
                            "cannot broadcast {x} to {ty} with dims={dims:?}"
                        )));
                    }
                }
                Ok(())
            }
            Op::Reshape => {
                let x = args[0];
                if x.dtype != ty.dtype {
                    return Err(Error::Type(format!(
                        "cannot reshape {x} to {ty}: element types differ"
                    )));
                }
                if x.shape.volume() != ty.shape.volume() {
                    return Err(Error::Type(format!(
                        "cannot reshape {x} to {ty}: element counts differ"
                    )));
                }
                Ok(())
            }
            Op::Const => {
                let Attr::Value(v) = attr else { unreachable!() };
                if ty.dtype == DType::I32 && (v.fract() != 0.0 || !v.is_finite()) {
                    return Err(Error::Type(format!(
                        "constant {v:?} is not an integer, but the type is {ty}"
                    )));
                }
                Ok(())
            }
            Op::Cast => {
                if args[0].shape != ty.shape {
                    return Err(Error::Type(format!(
                        "cannot cast {} to {ty}: shapes differ",
                        args[0]
                    )));
                }
                Ok(())
            }
            Op::OneHot => {
                let x = args[0];
                if x.dtype != DType::I32 {
                    return Err(Error::Type(format!(
                        "`one_hot` needs i32 labels, found {x}"
                    )));
                }
                let ok = ty.dtype.is_float()
                    && ty.rank() == x.rank() + 1
                    && ty.shape.0[..x.rank()] == x.shape.0[..]
                    && matches!(ty.shape.0.last(), Some(Dim::Known(_)));
                if !ok {
                    return Err(Error::Type(format!("`one_hot` of {x} cannot give {ty}")));
                }
                Ok(())
            }
            Op::Im2col | Op::Col2im => {
                let Attr::Window {
                    kernel,
                    stride,
                    pad,
                } = attr
                else {
                    unreachable!()
                };
                let (img, cols) = if self == Op::Im2col {
                    (args[0], ty)
                } else {
                    (ty, args[0])
                };
                let expect = im2col_type(img, *kernel, *stride, *pad)?;
                if &expect != cols || img.dtype != cols.dtype {
                    return Err(Error::Type(format!(
                        "`{}` with kernel={kernel:?}, stride={stride:?}, pad={pad:?} relates {img} to {expect}, not {cols}",
                        self.mnemonic()
                    )));
                }
                Ok(())
            }
            Op::Slice | Op::Pad => {
                let Attr::Offset { axis, start } = *attr else {
                    unreachable!()
                };
                let (big, small) = if self == Op::Slice {
                    (args[0], ty)
                } else {
                    (ty, args[0])
                };
                let fits = big.dtype == small.dtype
                    && big.rank() == small.rank()
                    && axis < big.rank()
                    && (0..big.rank()).all(|a| a == axis || big.shape.0[a] == small.shape.0[a])
                    && match (big.shape.0[axis].known(), small.shape.0[axis].known()) {
                        (Some(b), Some(s)) => start as u64 + s <= b,
                        _ => false,
                    };
                if !fits {
                    return Err(Error::Type(format!(
                        "`{}` at axis={axis}, start={start} cannot relate {} to {ty}",
                        self.mnemonic(),
                        args[0]
                    )));
                }
                Ok(())
            }
            Op::Gather | Op::ScatterAdd => {
                let Attr::Index { axis, .. } = *attr else {
                    unreachable!()
                };
                let ids = args[1];
                // The table, and what gathering `ids` from it gives.
                let (table, rows) = if self == Op::Gather {
                    (args[0], ty)
                } else {
                    (ty, args[0])
                };
                if ids.dtype != DType::I32 {
                    return Err(Error::Type(format!(
                        "`{}` needs i32 ids, found {ids}",
                        self.mnemonic()
                    )));
                }
                if axis >= table.rank() || table.shape.0[axis].known().is_none() {
                    return Err(Error::Type(format!(
                        "`{}` at axis={axis} needs a known axis of {table}",
                        self.mnemonic()
                    )));
                }
                let mut dims = table.shape.0[..axis].to_vec();
                dims.extend(ids.shape.0.iter().cloned());
                dims.extend(table.shape.0[axis + 1..].iter().cloned());
                let expect = TensorType::new(table.dtype, Shape(dims));
                if &expect != rows {
                    return Err(Error::Type(format!(
                        "`{}` of {ids} at axis={axis} relates {table} to {expect}, not {rows}",
                        self.mnemonic()
                    )));
                }
                Ok(())
            }
            Op::Iota => {
                let Attr::Axes(axes) = attr else {
                    unreachable!()
                };
                if axes.len() != 1 || axes[0] >= ty.rank() {
                    return Err(Error::Type(format!(
                        "`iota` needs one axis of {ty}, found axes={axes:?}"
                    )));
                }
                Ok(())
            }
            Op::Cotangent => {
                if !ty.dtype.is_float() {
                    return Err(Error::Type(format!(
                        "`cotangent` is a float adjoint, not {ty}"
                    )));
                }
                Ok(())
            }
            // Its type is the scan's result's, which the verifier checks (it needs the scan).
            Op::ScanOut | Op::LoopVar => Ok(()),
            Op::Attention | Op::AttentionGrad => unreachable!("not of class Given"),
            Op::Random => {
                let Attr::Value(stream) = attr else {
                    unreachable!()
                };
                let key = args[0];
                if key.dtype != DType::I32 || key.rank() != 0 {
                    return Err(Error::Type(format!(
                        "`random` needs an i32[] key, found {key}"
                    )));
                }
                if !ty.dtype.is_float() {
                    return Err(Error::Type(format!("`random` gives floats, not {ty}")));
                }
                if *stream < 0.0 || stream.fract() != 0.0 || *stream > 1e15 {
                    return Err(Error::Type(format!(
                        "`random` stream {stream} is not a small integer"
                    )));
                }
                Ok(())
            }
            Op::Neg
            | Op::Abs
            | Op::Sign
            | Op::Exp
            | Op::Log
            | Op::Sqrt
            | Op::Tanh
            | Op::Sigmoid
            | Op::Sin
            | Op::Cos
            | Op::Erf
            | Op::StopGradient
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Max
            | Op::Min
            | Op::Pow
            | Op::Lt
            | Op::Le
            | Op::Gt
            | Op::Ge
            | Op::Eq
            | Op::Ne
            | Op::Select
            | Op::Sum
            | Op::Mean
            | Op::ReduceMax
            | Op::MatMul
            | Op::Transpose
            | Op::Concat
            | Op::CustomGrad
            | Op::Scan => Err(Error::Type(format!(
                "`{}` is not of class Given",
                self.mnemonic()
            ))),
        }
    }
}

/// The type of a scan node itself (a placeholder: its results are `scan_out` nodes).
pub static LOOP_TYPE: TensorType = TensorType {
    dtype: DType::F32,
    shape: Shape(Vec::new()),
};

/// The run-time error of a gather or scatter whose id is not a row of its table: every
/// backend reports it in these words.
pub fn index_error(op: Op, line: usize, id: f64, rows: usize) -> String {
    let at = if line > 0 {
        format!(" on line {line}")
    } else {
        String::new()
    };
    format!(
        "`{}`{at}: id {id} is outside the table's rows 0..{rows}",
        op.mnemonic()
    )
}

fn check_attr_kind(info: &OpInfo, attr: &Attr) -> Result<(), Error> {
    let ok = matches!(
        (info.attr, attr),
        (AttrKind::None, Attr::None)
            | (AttrKind::Axes, Attr::Axes(_))
            | (AttrKind::Dims, Attr::Dims(_))
            | (AttrKind::Perm, Attr::Perm(_))
            | (AttrKind::Value, Attr::Value(_))
            | (AttrKind::Window, Attr::Window { .. })
            | (AttrKind::Offset, Attr::Offset { .. })
            | (AttrKind::Index, Attr::Index { .. })
            | (AttrKind::Axis, Attr::Axis(_))
            | (AttrKind::Loop, Attr::Loop(_))
            | (AttrKind::Output, Attr::Output(_))
            | (AttrKind::Causal, Attr::Causal(_))
    );
    if ok {
        Ok(())
    } else {
        Err(Error::Type(format!(
            "`{}` has the wrong attribute: {attr:?}",
            info.mnemonic
        )))
    }
}

fn check_axes(axes: &[usize], rank: usize, what: &str) -> Result<(), Error> {
    if axes.iter().any(|&a| a >= rank) {
        return Err(Error::Type(format!(
            "{what}={axes:?} out of range for rank {rank}"
        )));
    }
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::Type(format!(
            "{what}={axes:?} must be sorted and distinct"
        )));
    }
    Ok(())
}

fn is_permutation(perm: &[usize]) -> bool {
    let mut seen = vec![false; perm.len()];
    perm.iter()
        .all(|&p| p < perm.len() && !std::mem::replace(&mut seen[p], true))
}

/// The windows of an image `[N, C, H, W]`: `[N, C, KH, KW, OH, OW]` with `OH = (H + 2 *
/// pad - KH) / stride + 1` (rounded down, as PyTorch). The image's spatial sizes must be
/// known.
pub fn im2col_type(
    img: &TensorType,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
) -> Result<TensorType, Error> {
    if img.rank() != 4 || !img.dtype.is_float() {
        return Err(Error::Type(format!(
            "windows need a float image [N, C, H, W], found {img}"
        )));
    }
    if kernel.contains(&0) || stride.contains(&0) {
        return Err(Error::Type(format!(
            "kernel={kernel:?} and stride={stride:?} must be positive"
        )));
    }
    let mut out = img.shape.0[..2].to_vec();
    out.extend(kernel.iter().map(|&k| Dim::Known(k as u64)));
    for a in 0..2 {
        let Some(size) = img.shape.0[2 + a].known() else {
            return Err(Error::Type(format!(
                "windows need known image sizes, found {img}"
            )));
        };
        let padded = size.saturating_add((pad[a] as u64).saturating_mul(2));
        if padded < kernel[a] as u64 || pad[a] >= kernel[a] {
            return Err(Error::Type(format!(
                "a {}x{} window with padding {pad:?} does not fit {img}",
                kernel[0], kernel[1]
            )));
        }
        out.push(Dim::Known(
            (padded - kernel[a] as u64) / stride[a] as u64 + 1,
        ));
    }
    Ok(TensorType::new(img.dtype, Shape(out)))
}

fn matmul_type(a: &TensorType, b: &TensorType) -> Result<TensorType, Error> {
    if a.rank() < 2 || b.rank() < 2 {
        return Err(Error::Type(format!(
            "`matmul` needs operands of rank 2 or more, found {a} and {b}"
        )));
    }
    if a.dtype != b.dtype || !a.dtype.is_float() {
        return Err(Error::Type(format!(
            "`matmul` needs two operands of one float type, found {a} and {b}"
        )));
    }
    // A rank-2 operand is shared by every product of the other's batch.
    if a.rank() != b.rank() && a.rank() != 2 && b.rank() != 2 {
        return Err(Error::Type(format!(
            "`matmul` operands have different ranks: {a} and {b} (only a matrix may be shared across a batch)"
        )));
    }
    let (ad, bd) = (a.shape.dims(), b.shape.dims());
    let (ra, rb) = (ad.len(), bd.len());
    if ra == rb && ad[..ra - 2] != bd[..rb - 2] {
        return Err(Error::Type(format!(
            "`matmul` batch axes differ: {a} and {b}"
        )));
    }
    if ad[ra - 1] != bd[rb - 2] {
        return Err(Error::Type(format!(
            "cannot multiply {a} by {b}: inner dimensions {} and {} differ",
            ad[ra - 1],
            bd[rb - 2]
        )));
    }
    let mut dims = if ra >= rb {
        ad[..ra - 1].to_vec()
    } else {
        let mut d = bd[..rb - 2].to_vec();
        d.push(ad[ra - 2].clone());
        d
    };
    dims.push(bd[rb - 1].clone());
    Ok(TensorType::new(a.dtype, Shape(dims)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_op_order_and_mnemonics_are_unique() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.op as usize, i, "{} out of order", row.mnemonic);
            assert_eq!(Op::from_mnemonic(row.mnemonic), Some(row.op));
        }
    }

    #[test]
    fn elementwise_ops_and_only_they_have_a_scalar_definition() {
        for row in TABLE {
            assert_eq!(
                row.scalar.is_some(),
                row.op.is_elementwise(),
                "{}: a scalar definition exactly when elementwise",
                row.mnemonic
            );
            // Fused ops are elementwise (or constants); kernels of elementwise ops (pow)
            // are allowed.
            if matches!(row.lowering, Lowering::Fused { .. }) {
                assert!(
                    row.op.is_elementwise() || row.op == Op::Const,
                    "{} is fused but not elementwise",
                    row.mnemonic
                );
            }
            if let Sig::Call(params, required) = row.sig {
                assert!(required <= params.len(), "{}", row.mnemonic);
                assert!(params.len() >= row.arity, "{}", row.mnemonic);
            }
        }
    }

    #[test]
    fn float_only_ops_refuse_integers() {
        let i = TensorType::new(DType::I32, Shape::known(&[3]));
        for row in TABLE.iter().filter(|r| r.dtypes == DTypes::Float) {
            if row.class == Class::Unary {
                let err = row.op.result_type(&[&i], &Attr::None, None).unwrap_err();
                assert!(err.to_string().contains("needs a float operand"), "{err}");
            }
        }
        let err = Op::Mean
            .result_type(&[&i], &Attr::Axes(vec![0]), None)
            .unwrap_err();
        assert_eq!(
            err,
            Error::Type("`mean` needs a float operand, found i32[3]".into())
        );
    }

    #[test]
    fn matmul_rule_names_the_inner_dimensions() {
        let a = TensorType::new(
            DType::F32,
            Shape(vec![Dim::Sym("B".into()), Dim::Known(64)]),
        );
        let b = TensorType::new(DType::F32, Shape::known(&[128, 10]));
        let err = Op::MatMul
            .result_type(&[&a, &b], &Attr::None, None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot multiply f32[B, 64] by f32[128, 10]: inner dimensions 64 and 128 differ"
        );
    }
}
