//! The tensor IR's data structures: a module of functions, each an SSA list of nodes.
//!
//! A function's values are its inputs (fed by the caller), its parameters and optimizer
//! states (owned by the runtime, initialized as declared), and its nodes, in an order where
//! every operand is defined before it is used. Nodes are never removed in place: passes
//! build new functions, and the printer numbers nodes densely, so text stays stable.

use crate::op::{Attr, Op};
use crate::types::TensorType;

/// A compilation unit: the functions lowered from one program.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Module {
    /// Functions, in the order they were lowered.
    pub funcs: Vec<Func>,
}

impl Module {
    /// The function with this name.
    pub fn func(&self, name: &str) -> Option<&Func> {
        self.funcs.iter().find(|f| f.name == name)
    }
}

/// A function: inputs, parameters and states, nodes, outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Func {
    /// The name, printed after `@`.
    pub name: String,
    /// Values fed by the caller on every call.
    pub inputs: Vec<Arg>,
    /// Values owned by the runtime across calls: trained parameters and optimizer states.
    pub params: Vec<Param>,
    /// The computation, in definition-before-use order.
    pub nodes: Vec<Node>,
    /// The returned values.
    pub outputs: Vec<Value>,
}

/// A function input.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// The name, printed after `%`.
    pub name: String,
    /// Its type.
    pub ty: TensorType,
}

/// Whether a runtime-owned value is a trained parameter or an optimizer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A trained parameter (`param`).
    Param,
    /// Optimizer state kept beside each parameter (`state`).
    State,
    /// A model's non-trained value (`buffer`, as batch norm's running statistics): saved
    /// in checkpoints, never differentiated; the training loss returns its new value.
    Buffer,
}

/// A runtime-owned value with its initializer.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// `param` or `state`.
    pub kind: ParamKind,
    /// The name, dotted by the path of layer calls that made it (`h1.w`).
    pub name: String,
    /// Its type.
    pub ty: TensorType,
    /// How to fill it before training.
    pub init: Init,
}

/// An initializer, resolved to a concrete distribution (Xavier and He become uniform or
/// normal with their computed bounds when the front end lowers them).
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// All one value.
    Fill(f64),
    /// Normal with this mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Uniform on `[lo, hi)`.
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
}

/// A reference to a value of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// The i-th input.
    Input(u32),
    /// The i-th parameter or state.
    Param(u32),
    /// The i-th node.
    Node(u32),
}

/// One op applied to earlier values.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The primitive op.
    pub op: Op,
    /// Its operands.
    pub args: Vec<Value>,
    /// Its attribute.
    pub attr: Attr,
    /// The result type.
    pub ty: TensorType,
}

impl Func {
    /// An empty function.
    pub fn new(name: impl Into<String>) -> Func {
        Func {
            name: name.into(),
            inputs: Vec::new(),
            params: Vec::new(),
            nodes: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Adds an input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> Value {
        self.inputs.push(Arg {
            name: name.into(),
            ty,
        });
        Value::Input(self.inputs.len() as u32 - 1)
    }

    /// Adds a parameter or state.
    pub fn add_param(
        &mut self,
        kind: ParamKind,
        name: impl Into<String>,
        ty: TensorType,
        init: Init,
    ) -> Value {
        self.params.push(Param {
            kind,
            name: name.into(),
            ty,
            init,
        });
        Value::Param(self.params.len() as u32 - 1)
    }

    /// Appends a node whose type the caller has already checked.
    pub fn push(&mut self, op: Op, args: Vec<Value>, attr: Attr, ty: TensorType) -> Value {
        self.nodes.push(Node { op, args, attr, ty });
        Value::Node(self.nodes.len() as u32 - 1)
    }

    /// Appends a node after computing its type with the op's type rule.
    pub fn build(
        &mut self,
        op: Op,
        args: Vec<Value>,
        attr: Attr,
        given: Option<TensorType>,
    ) -> Result<Value, String> {
        let tys: Vec<&TensorType> = args.iter().map(|&v| self.ty(v)).collect();
        let ty = op.result_type(&tys, &attr, given.as_ref())?;
        Ok(self.push(op, args, attr, ty))
    }

    /// The type of a value.
    pub fn ty(&self, v: Value) -> &TensorType {
        match v {
            Value::Input(i) => &self.inputs[i as usize].ty,
            Value::Param(i) => &self.params[i as usize].ty,
            Value::Node(i) => &self.nodes[i as usize].ty,
        }
    }

    /// The types of the outputs.
    pub fn output_types(&self) -> Vec<&TensorType> {
        self.outputs.iter().map(|&v| self.ty(v)).collect()
    }
}

impl Func {
    /// The same function with every float type replaced by `dtype` (for example to run an
    /// f32 model in f64 for a gradient check).
    pub fn with_float_type(&self, dtype: crate::types::DType) -> Func {
        let conv = |t: &TensorType| {
            if t.dtype.is_float() {
                t.with_dtype(dtype)
            } else {
                t.clone()
            }
        };
        let mut f = self.clone();
        f.inputs.iter_mut().for_each(|a| a.ty = conv(&a.ty));
        f.params.iter_mut().for_each(|p| p.ty = conv(&p.ty));
        f.nodes.iter_mut().for_each(|n| n.ty = conv(&n.ty));
        f
    }
}
