//! The tensor IR's data structures: a module of functions, each an SSA list of nodes.
//!
//! A function's values are its inputs (fed by the caller), its parameters and optimizer
//! states (owned by the runtime, initialized as declared), and its nodes, in an order where
//! every operand is defined before it is used. Nodes are never removed in place: passes
//! build new functions, and the printer numbers nodes densely, so text stays stable.

use crate::Error;

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
    ) -> Result<Value, Error> {
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
        for n in &mut f.nodes {
            match &mut n.attr {
                // A scan's own type is a placeholder; its body's are converted.
                Attr::Loop(l) => l.body = l.body.with_float_type(dtype),
                _ => n.ty = conv(&n.ty),
            }
        }
        f
    }
}

/// A structured loop's body and how the scan's operands divide: the first `carries` are
/// the carried values' initial values, the next `sequences` are stepped along axis 0, the
/// rest are constants every step reads. The body takes one value per operand (a step of
/// each sequence: its type without axis 0) and returns the new carries, then one step of
/// each output.
#[derive(Clone, Debug, PartialEq)]
pub struct Loop {
    /// How many operands are carries.
    pub carries: usize,
    /// How many operands after them are sequences.
    pub sequences: usize,
    /// Whether the steps run from the last to the first (outputs still stacked in order).
    pub reverse: bool,
    /// One step.
    pub body: Func,
}

impl Loop {
    /// The number of steps: axis 0 of the sequences.
    pub fn steps<'t>(&self, args: &[&'t TensorType]) -> Option<&'t crate::types::Dim> {
        args.get(self.carries).and_then(|t| t.shape.0.first())
    }

    /// Checks the operands' types against the body's signature.
    pub fn check(&self, args: &[&TensorType]) -> Result<(), Error> {
        let b = &self.body;
        if self.sequences == 0 || self.carries + self.sequences > args.len() {
            return Err(Error::Type(format!(
                "`scan` needs at least one sequence after its {} carries, found {} operands",
                self.carries,
                args.len()
            )));
        }
        if b.inputs.len() != args.len() || !b.params.is_empty() {
            return Err(Error::Type(format!(
                "the body of `scan` takes {} values and no parameters, one per operand ({})",
                b.inputs.len(),
                args.len()
            )));
        }
        let t = self.steps(args);
        for (k, (a, arg)) in args.iter().zip(&b.inputs).enumerate() {
            let want = if k >= self.carries && k < self.carries + self.sequences {
                if a.rank() == 0 || a.shape.0.first() != t {
                    return Err(Error::Type(format!(
                        "sequence {a} of `scan` does not have the first sequence's steps"
                    )));
                }
                TensorType::new(a.dtype, crate::types::Shape(a.shape.0[1..].to_vec()))
            } else {
                (*a).clone()
            };
            if arg.ty != want {
                return Err(Error::Type(format!(
                    "the body of `scan` takes `%{}` as {}, but operand {k} gives {want}",
                    arg.name, arg.ty
                )));
            }
        }
        if b.outputs.len() < self.carries {
            return Err(Error::Type(
                "the body of `scan` must return every carry".into(),
            ));
        }
        for (k, a) in args.iter().take(self.carries).enumerate() {
            if b.ty(b.outputs[k]) != *a {
                return Err(Error::Type(format!(
                    "carry {k} of `scan` is {a}, but the body returns {}",
                    b.ty(b.outputs[k])
                )));
            }
        }
        Ok(())
    }

    /// The types of the results, for operands of these types: the carries', then each
    /// output stacked along a new axis 0.
    pub fn result_types(&self, args: &[&TensorType]) -> Vec<TensorType> {
        let b = &self.body;
        let t = self
            .steps(args)
            .cloned()
            .unwrap_or(crate::types::Dim::Known(0));
        b.outputs
            .iter()
            .enumerate()
            .map(|(k, &o)| {
                let ty = b.ty(o);
                if k < self.carries {
                    ty.clone()
                } else {
                    let mut dims = vec![t.clone()];
                    dims.extend(ty.shape.0.iter().cloned());
                    TensorType::new(ty.dtype, crate::types::Shape(dims))
                }
            })
            .collect()
    }
}

impl Func {
    /// The type of result `k` of the scan `v`, if `v` is a scan with that many results.
    pub fn scan_result(&self, v: Value, k: usize) -> Option<TensorType> {
        let Value::Node(i) = v else { return None };
        let n = self.nodes.get(i as usize)?;
        let Attr::Loop(l) = &n.attr else { return None };
        let tys: Vec<&TensorType> = n.args.iter().map(|&a| self.ty(a)).collect();
        l.result_types(&tys).into_iter().nth(k)
    }

    /// Appends `scan_out` nodes for every result of the scan `v`.
    pub fn scan_outs(&mut self, v: Value) -> Vec<Value> {
        let mut out = Vec::new();
        let mut k = 0;
        while let Some(ty) = self.scan_result(v, k) {
            out.push(self.push(Op::ScanOut, vec![v], Attr::Output(k), ty));
            k += 1;
        }
        out
    }
}

impl Func {
    /// Copies `src`'s nodes into this function with its inputs bound to `args`, and
    /// returns what its outputs became. `src` has no parameters.
    pub fn inline(&mut self, src: &Func, args: &[Value]) -> Result<Vec<Value>, Error> {
        if args.len() != src.inputs.len() || !src.params.is_empty() {
            return Err(Error::Type(format!(
                "cannot inline `@{}`: {} arguments for {} inputs",
                src.name,
                args.len(),
                src.inputs.len()
            )));
        }
        let mut map: Vec<Value> = Vec::with_capacity(src.nodes.len());
        let get = |map: &[Value], v: Value| match v {
            Value::Input(i) => args[i as usize],
            Value::Node(i) => map[i as usize],
            Value::Param(_) => unreachable!("checked: no parameters"),
        };
        for n in &src.nodes {
            let a = n.args.iter().map(|&v| get(&map, v)).collect();
            map.push(self.push(n.op, a, n.attr.clone(), n.ty.clone()));
        }
        Ok(src.outputs.iter().map(|&v| get(&map, v)).collect())
    }
}
