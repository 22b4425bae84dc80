//! `nnc export`: a checkpoint's inference pass as an ONNX model, for onnxruntime, tract,
//! Netron and the verifiers that read ONNX.
//!
//! The optimized forward function `@M` (dropout off, batch norm on its running
//! statistics) is lowered primitive by primitive to ONNX operators (opset 17 by default):
//! every op of the table has one mapping below or is refused with its name and source
//! line. The trained weights are initializers; symbolic dimensions (the batch) are
//! `dim_param`s, and the shapes that need them at run time are read off the inputs with
//! `Shape`. The train block's feature scale is the graph's first `Mul`, so the exported
//! model takes the features `nnc predict` takes.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;
use nnc_ir::{Attr, DType, Dim, Func, Op, TensorType, Value};
use nnc_train::TrainConfig;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_shape_proto, type_proto,
};
use protobuf::Message;

mod recurrent;

use crate::train_cmds::{base_dir, fail, pick, session_from};
use crate::{Failed, load_checked};

#[derive(Args)]
pub struct ExportArgs {
    /// The .nn file.
    file: PathBuf,
    /// The model (default: the one with a train block, else the first).
    #[arg(long)]
    model: Option<String>,
    /// The trained parameters.
    #[arg(long, value_name = "CKPT")]
    checkpoint: PathBuf,
    /// The ONNX file to write.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// The ONNX operator set (13 to 17).
    #[arg(long, default_value_t = 17, value_parser = clap::value_parser!(i64).range(13..=17))]
    opset: i64,
}

pub fn export(a: ExportArgs) -> Result<(), Failed> {
    let checked = load_checked(&a.file)?;
    let (model, spec) = pick(&checked, &a.file, a.model.clone(), false)?;
    let scale = spec
        .as_ref()
        .and_then(|s| TrainConfig::from_spec(s, &base_dir(&a.file)).data)
        .map_or(1.0, |d| d.scale);
    let f = model.forward.clone();
    // Refuse what cannot be exported before reading the checkpoint. Source lines are
    // known for the function as checked (before the passes): the first node there of the
    // same op and type.
    if let Some((n, why)) = first_unmapped(&f) {
        let line = checked.module.func(&f.name).and_then(|c| {
            let lines = checked.lines.get(&f.name)?;
            let i = c.nodes.iter().position(|m| m.op == n.op && m.ty == n.ty)?;
            lines.get(i).copied()
        });
        let at = match line.unwrap_or(0) {
            0 => String::new(),
            l => format!(" on line {l}"),
        };
        return Err(fail(format!(
            "`{}` cannot be exported to ONNX: `{}`{at} {why}",
            f.name,
            n.op.mnemonic()
        )));
    }
    let (session, _) = session_from(
        model,
        spec.as_ref(),
        &a.file,
        &a.checkpoint,
        nnc_train::Backend::Interp,
    )?;
    // With the training data's normalization, after the scale.
    let (f, params) = crate::deploy::deployed(&session, &f).map_err(fail)?;
    let meta = Meta {
        source: a.file.display().to_string(),
        opset: a.opset,
        scale,
    };
    let bytes = to_onnx(&f, &params, &meta).map_err(fail)?;
    nnc_runtime::checkpoint::write_atomic(&a.output, &bytes).map_err(fail)?;
    println!(
        "wrote {} ({} bytes, opset {}, {} nodes)",
        a.output.display(),
        bytes.len(),
        a.opset,
        f.nodes.len()
    );
    Ok(())
}

/// What the model's metadata records.
pub struct Meta {
    /// The source file.
    pub source: String,
    /// The operator set.
    pub opset: i64,
    /// The feature scale applied to the first input.
    pub scale: f64,
}

/// The first node (loop bodies included) without an ONNX mapping, and why.
fn first_unmapped(f: &Func) -> Option<(&nnc_ir::Node, &'static str)> {
    f.nodes.iter().find_map(|n| match &n.attr {
        Attr::Loop(l) => first_unmapped(&l.body),
        _ => unmapped(n).map(|why| (n, why)),
    })
}

/// Why a node has no ONNX mapping, if it has none: ops of training only (adjoints,
/// noise), which an inference pass does not hold, and integer division.
fn unmapped(n: &nnc_ir::Node) -> Option<&'static str> {
    match n.op {
        Op::Col2im | Op::ScatterAdd | Op::Random | Op::Cotangent | Op::CustomGrad => {
            Some("has no ONNX mapping")
        }
        Op::LoopVar => Some("is a loop body's stand-in, which never leaves the front end"),
        Op::Div if !n.ty.dtype.is_float() => {
            Some("divides integers (x / 0 is 0 in nnc), which no ONNX operator does")
        }
        _ => None,
    }
}

const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;
const BOOL: i32 = 9;
const DOUBLE: i32 = 11;

fn elem(d: DType) -> i32 {
    match d {
        DType::F32 => FLOAT,
        DType::F64 => DOUBLE,
        DType::I32 => INT32,
    }
}

fn value_info(name: &str, t: &TensorType) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in t.shape.dims() {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.value = Some(match d {
            Dim::Known(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
            Dim::Sym(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
        });
        shape.dim.push(dim);
    }
    let mut tt = type_proto::Tensor::new();
    tt.elem_type = elem(t.dtype);
    tt.shape = protobuf::MessageField::some(shape);
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tt));
    let mut v = ValueInfoProto::new();
    v.name = name.to_string();
    v.type_ = protobuf::MessageField::some(ty);
    v
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = i;
    a
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::TENSOR.into();
    a.t = protobuf::MessageField::some(t);
    a
}

/// A tensor of `dtype` with these dims and values (stored raw, little-endian).
fn tensor(name: &str, dtype: i32, dims: &[i64], values: &[f64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = dtype;
    t.dims = dims.to_vec();
    t.raw_data = match dtype {
        FLOAT => values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect(),
        DOUBLE => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        INT32 => values
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect(),
        INT64 => values
            .iter()
            .flat_map(|&v| (v as i64).to_le_bytes())
            .collect(),
        _ => values.iter().map(|&v| u8::from(v != 0.0)).collect(),
    };
    t
}

/// Builds the graph: names values, emits nodes.
struct Graph<'a> {
    f: &'a Func,
    /// The parameters' values (`f.params` order); empty in a loop body.
    params: &'a [Vec<f32>],
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    count: usize,
    /// `[1]` int64 tensors holding a symbolic dimension's run-time size.
    syms: HashMap<String, String>,
    /// The name of each input after its scale.
    inputs: Vec<String>,
    /// Shape tensors already built, by their dimensions.
    shapes: HashMap<Vec<Dim>, String>,
}

impl Graph<'_> {
    fn fresh(&mut self, hint: &str) -> String {
        self.count += 1;
        format!("{hint}_{}", self.count)
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_to(op, inputs, attrs, &out);
        out
    }

    fn node_to(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, out: &str) {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = out.to_string();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![out.to_string()];
        n.attribute = attrs;
        self.nodes.push(n);
    }

    /// An int64 initializer.
    fn ints(&mut self, v: &[i64]) -> String {
        let name = self.fresh("c");
        let vals: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        self.inits
            .push(tensor(&name, INT64, &[v.len() as i64], &vals));
        name
    }

    /// A scalar initializer of `dtype`.
    fn scalar(&mut self, dtype: i32, v: f64) -> String {
        let name = self.fresh("c");
        self.inits.push(tensor(&name, dtype, &[], &[v]));
        name
    }

    /// The run-time size of a symbolic dimension, as an int64 `[1]`, read off the first
    /// input that has it.
    fn sym(&mut self, s: &str) -> Result<String, String> {
        if let Some(n) = self.syms.get(s) {
            return Ok(n.clone());
        }
        let (k, axis) = self
            .f
            .inputs
            .iter()
            .enumerate()
            .find_map(|(k, a)| {
                a.ty.shape
                    .dims()
                    .iter()
                    .position(|d| matches!(d, Dim::Sym(x) if x == s))
                    .map(|ax| (k, ax))
            })
            .ok_or_else(|| format!("no input has the dimension `{s}`"))?;
        let input = self.inputs[k].clone();
        let shape = self.node("Shape", &[&input], vec![]);
        let at = self.ints(&[axis as i64]);
        let n = self.node("Gather", &[&shape, &at], vec![attr_int("axis", 0)]);
        self.syms.insert(s.to_string(), n.clone());
        Ok(n)
    }

    /// A shape as an int64 tensor: a constant, or pieces joined at run time.
    fn shape(&mut self, dims: &[Dim]) -> Result<String, String> {
        if let Some(s) = self.shapes.get(dims) {
            return Ok(s.clone());
        }
        let s = self.new_shape(dims)?;
        self.shapes.insert(dims.to_vec(), s.clone());
        Ok(s)
    }

    fn new_shape(&mut self, dims: &[Dim]) -> Result<String, String> {
        if dims.iter().all(|d| d.known().is_some()) {
            let v: Vec<i64> = dims.iter().map(|d| d.known().unwrap_or(0) as i64).collect();
            return Ok(self.ints(&v));
        }
        let mut parts = Vec::new();
        for d in dims {
            parts.push(match d {
                Dim::Known(n) => self.ints(&[*n as i64]),
                Dim::Sym(s) => self.sym(s)?,
            });
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        Ok(self.node("Concat", &refs, vec![attr_int("axis", 0)]))
    }
}

/// The ONNX model of `f` with `params` (in `f.params` order) as initializers.
pub fn to_onnx(f: &Func, params: &[Vec<f32>], meta: &Meta) -> Result<Vec<u8>, String> {
    let mut g = Graph {
        f,
        params,
        nodes: Vec::new(),
        inits: Vec::new(),
        count: 0,
        syms: HashMap::new(),
        inputs: Vec::new(),
        shapes: HashMap::new(),
    };
    let mut graph = GraphProto::new();
    graph.name = f.name.clone();
    for (k, a) in f.inputs.iter().enumerate() {
        graph.input.push(value_info(&a.name, &a.ty));
        let scaled = k == 0 && meta.scale != 1.0 && a.ty.dtype.is_float();
        let name = if scaled {
            let s = g.scalar(elem(a.ty.dtype), meta.scale);
            g.node("Mul", &[&a.name, &s], vec![])
        } else {
            a.name.clone()
        };
        g.inputs.push(name);
    }
    // Only what the inference pass reads (a feedback matrix is training's).
    let used: std::collections::HashSet<Value> = f
        .nodes
        .iter()
        .flat_map(|n| n.args.iter().copied())
        .chain(f.outputs.iter().copied())
        .collect();
    for (k, (p, data)) in f.params.iter().zip(params).enumerate() {
        if !used.contains(&Value::Param(k as u32)) {
            continue;
        }
        let dims: Vec<i64> =
            p.ty.shape
                .dims()
                .iter()
                .map(|d| d.known().unwrap_or(0) as i64)
                .collect();
        let vals: Vec<f64> = data.iter().map(|&v| v as f64).collect();
        g.inits
            .push(tensor(&p.name, elem(p.ty.dtype), &dims, &vals));
    }
    let names = emit_nodes(&mut g, meta.opset)?;
    for (k, &o) in f.outputs.iter().enumerate() {
        let name = if k == 0 {
            "output".to_string()
        } else {
            format!("output_{k}")
        };
        let src = match o {
            Value::Input(j) => g.inputs[j as usize].clone(),
            Value::Param(j) => f.params[j as usize].name.clone(),
            Value::Node(j) => names[j as usize].clone(),
        };
        g.node_to("Identity", &[&src], vec![], &name);
        graph.output.push(value_info(&name, f.ty(o)));
    }
    // Drop what no output reads (the primitives a layer's operator replaced).
    let mut live: std::collections::HashSet<String> =
        graph.output.iter().map(|o| o.name.clone()).collect();
    let mut kept = Vec::new();
    for n in g.nodes.into_iter().rev() {
        if n.output.iter().any(|o| live.contains(o)) {
            reads(&n, &mut live);
            kept.push(n);
        }
    }
    kept.reverse();
    graph.node = kept;
    graph.initializer = g
        .inits
        .into_iter()
        .filter(|t| live.contains(&t.name))
        .collect();
    let mut m = ModelProto::new();
    // IR version 8 goes with opset 17.
    m.ir_version = 8;
    m.producer_name = "nnc".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    m.doc_string = format!("{} from {}", f.name, meta.source);
    let mut opset = OperatorSetIdProto::new();
    opset.domain = String::new();
    opset.version = meta.opset;
    m.opset_import.push(opset);
    for (k, v) in [
        ("nnc_version", env!("CARGO_PKG_VERSION").to_string()),
        ("source", meta.source.clone()),
        ("model", f.name.clone()),
        ("input_scale", meta.scale.to_string()),
    ] {
        let mut e = StringStringEntryProto::new();
        e.key = k.into();
        e.value = v;
        m.metadata_props.push(e);
    }
    m.graph = protobuf::MessageField::some(graph);
    m.write_to_bytes()
        .map_err(|e| format!("cannot encode the ONNX model: {e}"))
}

/// The names a node reads, those its subgraphs read from outside included.
fn reads(n: &NodeProto, out: &mut std::collections::HashSet<String>) {
    out.extend(n.input.iter().cloned());
    for a in &n.attribute {
        if let Some(body) = a.g.as_ref() {
            body.node.iter().for_each(|m| reads(m, out));
        }
    }
}

/// Emits `g.f`'s nodes (its inputs named by `g.inputs`, its parameters by their names)
/// and returns each node's value name.
fn emit_nodes(g: &mut Graph, opset: i64) -> Result<Vec<String>, String> {
    let f = g.f;
    let mut names: Vec<String> = Vec::with_capacity(f.nodes.len());
    // The results of each scan, by node.
    let mut scans: HashMap<usize, Vec<String>> = HashMap::new();
    for (i, n) in f.nodes.iter().enumerate() {
        let name_of = |v: Value| match v {
            Value::Input(j) => g.inputs[j as usize].clone(),
            Value::Param(j) => f.params[j as usize].name.clone(),
            Value::Node(j) => names[j as usize].clone(),
        };
        if let (Attr::Output(k), Some(Value::Node(s))) = (&n.attr, n.args.first()) {
            let out = scans
                .get(&(*s as usize))
                .and_then(|r| r.get(*k))
                .cloned()
                .ok_or_else(|| format!("%{i} = scan_out reads no scan"))?;
            names.push(out);
            continue;
        }
        if let Some(rnn) = recurrent::recognize(f, i).filter(|_| !g.params.is_empty()) {
            let outs = recurrent_node(g, &rnn, &name_of(rnn.x));
            scans.insert(i, outs);
            names.push(String::new());
            continue;
        }
        if let Attr::Loop(l) = &n.attr {
            let args: Vec<String> = n.args.iter().map(|&v| name_of(v)).collect();
            let outs = scan(g, l, &args, opset).map_err(|e| format!("%{i} = scan: {e}"))?;
            scans.insert(i, outs);
            names.push(String::new());
            continue;
        }
        if let Some((op, inputs, attrs)) = layer_op(f, i, &name_of, opset) {
            let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let out = g.node(op, &refs, attrs);
            names.push(out);
            continue;
        }
        let args: Vec<String> = n.args.iter().map(|&v| name_of(v)).collect();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = lower(
            g,
            n.op,
            &n.attr,
            &a,
            &n.ty,
            &n.args.iter().map(|&v| f.ty(v)).collect::<Vec<_>>(),
        )
        .map_err(|e| format!("%{i} = {}: {e}", n.op.mnemonic()))?;
        names.push(out);
    }
    Ok(names)
}

/// A recognized GRU or LSTM as ONNX's node; returns the names of the scan's results.
fn recurrent_node(g: &mut Graph, rnn: &recurrent::Rnn, x: &str) -> Vec<String> {
    let (kind, units) = (rnn.kind, rnn.units);
    let wide = (kind.gates() * units) as i64;
    let p = |k: u32| &g.params[k as usize];
    let (wi, wh) = (p(rnn.wi), p(rnn.wh));
    let w = recurrent::weights(kind, units, wi);
    let r = recurrent::weights(kind, units, wh);
    let bias = recurrent::biases(kind, units, p(rnn.bi), p(rnn.bh));
    let feat = (wi.len() as i64) / wide;
    // Named after the layer: `h.wi` gives `h.W`, `h.R`, `h.B`.
    let layer = g.f.params[rnn.wi as usize].name.clone();
    let layer = layer.rsplit_once('.').map_or(layer.as_str(), |(l, _)| l);
    let names = ["W", "R", "B"].map(|s| format!("{layer}.{s}"));
    g.inits.push(tensor(&names[0], FLOAT, &[1, wide, feat], &w));
    g.inits
        .push(tensor(&names[1], FLOAT, &[1, wide, units as i64], &r));
    g.inits
        .push(tensor(&names[2], FLOAT, &[1, 2 * wide], &bias));
    // ONNX's sequences are [T, B, F].
    let xt = g.node("Transpose", &[x], vec![attr_ints("perm", &[1, 0, 2])]);
    let tag = g.fresh(&kind.op().to_lowercase());
    let outputs: Vec<String> = ["Y", "Y_h", "Y_c"]
        [..if kind == recurrent::Kind::Lstm { 3 } else { 2 }]
        .iter()
        .map(|o| format!("{tag}_{o}"))
        .collect();
    let mut n = NodeProto::new();
    n.op_type = kind.op().into();
    n.name = tag;
    n.input = vec![xt, names[0].clone(), names[1].clone(), names[2].clone()];
    n.output = outputs.clone();
    n.attribute = vec![attr_int("hidden_size", units as i64)];
    if kind == recurrent::Kind::Gru {
        // PyTorch's GRU: the reset gate scales the recurrent product, bias included.
        n.attribute.push(attr_int("linear_before_reset", 1));
    }
    g.nodes.push(n);
    // Y is [T, 1, B, U]; Y_h and Y_c [1, B, U].
    let (axis0, axis1) = (g.ints(&[0]), g.ints(&[1]));
    rnn.results
        .iter()
        .map(|res| match res {
            recurrent::Output::Hidden => g.node("Squeeze", &[&outputs[1], &axis0], vec![]),
            recurrent::Output::Cell => g.node("Squeeze", &[&outputs[2], &axis0], vec![]),
            recurrent::Output::Every => g.node("Squeeze", &[&outputs[0], &axis1], vec![]),
        })
        .collect()
}

/// A scan as ONNX's `Scan`: its body a subgraph over the carries and one step of each
/// sequence, reading the constants from the enclosing graph by name; returns the names
/// of the final carries and the stacked outputs.
fn scan(
    g: &mut Graph,
    l: &nnc_ir::Loop,
    args: &[String],
    opset: i64,
) -> Result<Vec<String>, String> {
    let b = &l.body;
    let (nc, ns) = (l.carries, l.sequences);
    let tag = g.fresh("scan");
    let mut inner = Graph {
        f: b,
        params: &[],
        nodes: Vec::new(),
        inits: Vec::new(),
        count: g.count,
        syms: HashMap::new(),
        inputs: Vec::new(),
        shapes: HashMap::new(),
    };
    let mut body = GraphProto::new();
    body.name = format!("{tag}_body");
    for (k, a) in b.inputs.iter().enumerate() {
        if k < nc + ns {
            let name = format!("{tag}_in{k}");
            body.input.push(value_info(&name, &a.ty));
            inner.inputs.push(name);
        } else {
            inner.inputs.push(args[k].clone());
        }
    }
    let names = emit_nodes(&mut inner, opset)?;
    for (k, &o) in b.outputs.iter().enumerate() {
        let src = match o {
            Value::Input(j) => inner.inputs[j as usize].clone(),
            Value::Param(_) => return Err("a loop body has no parameters".into()),
            Value::Node(j) => names[j as usize].clone(),
        };
        let name = format!("{tag}_out{k}");
        inner.node_to("Identity", &[&src], vec![], &name);
        body.output.push(value_info(&name, b.ty(o)));
    }
    g.count = inner.count;
    body.node = inner.nodes;
    body.initializer = inner.inits;
    let ny = b.outputs.len() - nc;
    let dir = i64::from(l.reverse);
    let mut graph_attr = AttributeProto::new();
    graph_attr.name = "body".into();
    graph_attr.type_ = AttributeType::GRAPH.into();
    graph_attr.g = protobuf::MessageField::some(body);
    let mut n = NodeProto::new();
    n.op_type = "Scan".into();
    n.name = tag.clone();
    n.input = args[..nc + ns].to_vec();
    n.output = (0..nc + ny).map(|k| format!("{tag}_r{k}")).collect();
    n.attribute = vec![
        graph_attr,
        attr_int("num_scan_inputs", ns as i64),
        attr_ints("scan_input_directions", &vec![dir; ns]),
        attr_ints("scan_output_directions", &vec![dir; ny]),
    ];
    let outs = n.output.clone();
    g.nodes.push(n);
    Ok(outs)
}

/// ONNX's own operator for the prelude layer whose primitives end at node `i`, if they
/// are exactly one: `Gemm` for a dense layer (`x @ w + b`, rank 2), `Conv` for `conv2d`
/// (windows times the filters, plus the bias), `MaxPool` and `AveragePool` for the
/// pools, `BatchNormalization` for batch norm in inference, `Relu` for `max(x, 0)`,
/// `Softmax` and (opset 17) `LayerNormalization` over the last axis.
/// Returns the operator, its inputs and attributes.
fn layer_op(
    f: &Func,
    i: usize,
    name: &dyn Fn(Value) -> String,
    opset: i64,
) -> Option<(&'static str, Vec<String>, Vec<AttributeProto>)> {
    let node = |v: Value| match v {
        Value::Node(j) => Some(&f.nodes[j as usize]),
        _ => None,
    };
    let param = |v: Value, rank: usize| matches!(v, Value::Param(_)) && f.ty(v).rank() == rank;
    // A bias: a rank-1 parameter broadcast along axis `axis` of the result.
    let bias = |v: Value, axis: usize| {
        let b = node(v)?;
        (b.op == Op::Broadcast && b.attr == Attr::Dims(vec![axis]) && param(b.args[0], 1))
            .then(|| b.args[0])
    };
    let window = |a: &Attr| match *a {
        Attr::Window {
            kernel,
            stride,
            pad,
        } => Some((kernel, stride, pad)),
        _ => None,
    };
    let window_attrs = |k: [usize; 2], s: [usize; 2], p: [usize; 2]| {
        let v = |a: [usize; 2]| [a[0] as i64, a[1] as i64];
        let p = [p[0] as i64, p[1] as i64, p[0] as i64, p[1] as i64];
        vec![
            attr_ints("kernel_shape", &v(k)),
            attr_ints("strides", &v(s)),
            attr_ints("pads", &p),
        ]
    };
    // conv2d: reshape(reshape(w) @ reshape(im2col(x)), [N, O, OH, OW]).
    let conv = |v: Value| {
        let r = node(v)?;
        let m = node(*r.args.first()?).filter(|m| r.op == Op::Reshape && m.op == Op::MatMul)?;
        let w = node(m.args[0]).filter(|w| w.op == Op::Reshape && param(w.args[0], 4))?;
        let c = node(m.args[1]).filter(|c| c.op == Op::Reshape)?;
        let cols = node(c.args[0]).filter(|c| c.op == Op::Im2col)?;
        let (k, s, p) = window(&cols.attr)?;
        Some((cols.args[0], w.args[0], window_attrs(k, s, p)))
    };
    // Through reshapes.
    let bare = |mut v: Value| {
        while let Some(r) = node(v).filter(|r| r.op == Op::Reshape) {
            v = r.args[0];
        }
        v
    };
    let constant = |v: Value| match node(v) {
        Some(c) if c.op == Op::Const => match c.attr {
            Attr::Value(x) => Some(x),
            _ => None,
        },
        _ => None,
    };
    // batch norm in inference: (x - mean) / sqrt(var + eps) * gamma + beta, each
    // statistic a rank-1 parameter or buffer broadcast along the channels.
    let batch_norm = |n: &nnc_ir::Node| {
        let beta = bias(n.args[1], 1)?;
        let scaled = node(n.args[0]).filter(|m| m.op == Op::Mul)?;
        let gamma = bias(scaled.args[1], 1)?;
        let d = node(scaled.args[0]).filter(|d| d.op == Op::Div)?;
        let centered = node(d.args[0]).filter(|s| s.op == Op::Sub)?;
        let mean = bias(centered.args[1], 1)?;
        let root = node(bare(
            node(d.args[1]).filter(|b| b.op == Op::Broadcast)?.args[0],
        ))
        .filter(|r| r.op == Op::Sqrt)?;
        let sum = node(root.args[0]).filter(|s| s.op == Op::Add)?;
        let var = bare(sum.args[0]);
        let eps = constant(sum.args[1])?;
        (param(var, 1) && f.ty(var) == f.ty(mean)).then_some(())?;
        let inputs = vec![
            name(centered.args[0]),
            name(gamma),
            name(beta),
            name(mean),
            name(var),
        ];
        let mut e = AttributeProto::new();
        e.name = "epsilon".into();
        e.type_ = AttributeType::FLOAT.into();
        e.f = eps as f32;
        Some(("BatchNormalization", inputs, vec![e]))
    };
    let last = |t: &TensorType| t.rank().checked_sub(1);
    // A reduction over the last axis of `x` only, broadcast back (through reshapes).
    let over_last = |v: Value, op: Op| {
        let b = node(v).filter(|b| b.op == Op::Broadcast)?;
        let r = node(bare(b.args[0])).filter(|r| r.op == op)?;
        let axis = last(f.ty(r.args[0]))?;
        (r.attr == Attr::Axes(vec![axis])).then(|| r.args[0])
    };
    // softmax: exp(x - max(x)) / sum(exp(x - max(x))) along the last axis.
    let softmax = |n: &nnc_ir::Node| {
        let e = node(n.args[0]).filter(|e| e.op == Op::Exp)?;
        (over_last(n.args[1], Op::Sum)? == n.args[0]).then_some(())?;
        let s = node(e.args[0]).filter(|s| s.op == Op::Sub)?;
        let x = s.args[0];
        (over_last(s.args[1], Op::ReduceMax)? == x).then_some(())?;
        Some(("Softmax", vec![name(x)], vec![attr_int("axis", -1)]))
    };
    // layer norm: (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * gamma + beta over
    // the last axis.
    let layer_norm = |n: &nnc_ir::Node| {
        let axis = last(&n.ty)?;
        let beta = bias(n.args[1], axis)?;
        let scaled = node(n.args[0]).filter(|m| m.op == Op::Mul)?;
        let gamma = bias(scaled.args[1], axis)?;
        let d = node(scaled.args[0]).filter(|d| d.op == Op::Div)?;
        let centered = node(d.args[0]).filter(|s| s.op == Op::Sub)?;
        let x = centered.args[0];
        (over_last(centered.args[1], Op::Mean)? == x).then_some(())?;
        let b = node(d.args[1]).filter(|b| b.op == Op::Broadcast)?;
        let root = node(bare(b.args[0])).filter(|r| r.op == Op::Sqrt)?;
        let sum = node(root.args[0]).filter(|s| s.op == Op::Add)?;
        let eps = constant(sum.args[1])?;
        let var = node(bare(sum.args[0])).filter(|v| v.op == Op::Mean)?;
        let sq = node(var.args[0]).filter(|q| q.op == Op::Mul)?;
        (sq.args[0] == d.args[0] && sq.args[1] == d.args[0] && var.attr == Attr::Axes(vec![axis]))
            .then_some(())?;
        let mut e = AttributeProto::new();
        e.name = "epsilon".into();
        e.type_ = AttributeType::FLOAT.into();
        e.f = eps as f32;
        Some((
            "LayerNormalization",
            vec![name(x), name(gamma), name(beta)],
            vec![attr_int("axis", -1), e],
        ))
    };
    let n = &f.nodes[i];
    match n.op {
        Op::Div if n.ty.dtype.is_float() => softmax(n),
        // relu = max(x, 0)
        Op::Max if constant(n.args[1]) == Some(0.0) && n.ty.dtype.is_float() => {
            Some(("Relu", vec![name(n.args[0])], vec![]))
        }
        Op::Add => {
            if n.ty.rank() >= 2
                && let Some(bn) = batch_norm(n)
            {
                return Some(bn);
            }
            // LayerNormalization is an operator from opset 17 on.
            if n.ty.dtype.is_float()
                && opset >= 17
                && let Some(ln) = layer_norm(n)
            {
                return Some(ln);
            }
            let (a, b) = (n.args[0], n.args[1]);
            if let Some(mm) = node(a).filter(|m| m.op == Op::MatMul)
                && f.ty(mm.args[0]).rank() == 2
                && param(mm.args[1], 2)
                && let Some(b) = bias(b, 1)
                && n.ty.rank() == 2
            {
                let inputs = vec![name(mm.args[0]), name(mm.args[1]), name(b)];
                return Some(("Gemm", inputs, vec![]));
            }
            if let Some((x, w, attrs)) = conv(a)
                && let Some(b) = bias(b, 1)
            {
                return Some(("Conv", vec![name(x), name(w), name(b)], attrs));
            }
            None
        }
        Op::Reshape => {
            let (x, w, attrs) = conv(Value::Node(i as u32))?;
            Some(("Conv", vec![name(x), name(w)], attrs))
        }
        Op::ReduceMax | Op::Mean if n.attr == Attr::Axes(vec![2, 3]) => {
            let cols = node(n.args[0]).filter(|c| c.op == Op::Im2col)?;
            let (k, s, p) = window(&cols.attr)?;
            if n.op == Op::ReduceMax {
                // im2col pads with zeros, which MaxPool's padding does not.
                (p == [0, 0]).then(|| ("MaxPool", vec![name(cols.args[0])], window_attrs(k, s, p)))
            } else {
                let mut attrs = window_attrs(k, s, p);
                attrs.push(attr_int("count_include_pad", 1));
                Some(("AveragePool", vec![name(cols.args[0])], attrs))
            }
        }
        _ => None,
    }
}

/// One primitive as ONNX nodes; returns the name of its result.
fn lower(
    g: &mut Graph,
    op: Op,
    attr: &Attr,
    a: &[&str],
    ty: &TensorType,
    xs: &[&TensorType],
) -> Result<String, String> {
    let x = xs.first().copied();
    let dims = ty.shape.dims().to_vec();
    let known = |d: &Dim| d.known().map(|n| n as i64);
    Ok(match op {
        Op::Neg => g.node("Neg", a, vec![]),
        Op::Abs => g.node("Abs", a, vec![]),
        Op::Sign => g.node("Sign", a, vec![]),
        Op::Exp => g.node("Exp", a, vec![]),
        Op::Log => g.node("Log", a, vec![]),
        Op::Sqrt => g.node("Sqrt", a, vec![]),
        Op::Tanh => g.node("Tanh", a, vec![]),
        Op::Sigmoid => g.node("Sigmoid", a, vec![]),
        Op::Sin => g.node("Sin", a, vec![]),
        Op::Cos => g.node("Cos", a, vec![]),
        Op::Erf => g.node("Erf", a, vec![]),
        Op::StopGradient => g.node("Identity", a, vec![]),
        Op::Add => g.node("Add", a, vec![]),
        Op::Sub => g.node("Sub", a, vec![]),
        Op::Mul => g.node("Mul", a, vec![]),
        Op::Div if ty.dtype.is_float() => g.node("Div", a, vec![]),
        Op::Div => return Err("integer division (x / 0 = 0 in nnc) has no ONNX equal".into()),
        Op::Max => g.node("Max", a, vec![]),
        Op::Min => g.node("Min", a, vec![]),
        Op::Pow => g.node("Pow", a, vec![]),
        Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Eq | Op::Ne => {
            let b = match op {
                Op::Lt => g.node("Less", a, vec![]),
                Op::Le => g.node("LessOrEqual", a, vec![]),
                Op::Gt => g.node("Greater", a, vec![]),
                Op::Ge => g.node("GreaterOrEqual", a, vec![]),
                _ => g.node("Equal", a, vec![]),
            };
            let b = if op == Op::Ne {
                g.node("Not", &[&b], vec![])
            } else {
                b
            };
            g.node("Cast", &[&b], vec![attr_int("to", elem(ty.dtype) as i64)])
        }
        Op::Select => {
            let c = g.node("Cast", &[a[0]], vec![attr_int("to", BOOL as i64)]);
            g.node("Where", &[&c, a[1], a[2]], vec![])
        }
        Op::Sum | Op::Mean | Op::ReduceMax => {
            let Attr::Axes(axes) = attr else {
                return Err("no axes".into());
            };
            if axes.is_empty() {
                return Ok(g.node("Identity", a, vec![]));
            }
            let ax: Vec<i64> = axes.iter().map(|&v| v as i64).collect();
            match op {
                Op::Sum => {
                    let axes = g.ints(&ax);
                    g.node("ReduceSum", &[a[0], &axes], vec![attr_int("keepdims", 0)])
                }
                Op::Mean => g.node(
                    "ReduceMean",
                    a,
                    vec![attr_ints("axes", &ax), attr_int("keepdims", 0)],
                ),
                _ => g.node(
                    "ReduceMax",
                    a,
                    vec![attr_ints("axes", &ax), attr_int("keepdims", 0)],
                ),
            }
        }
        Op::MatMul => g.node("MatMul", a, vec![]),
        Op::Broadcast => {
            let Attr::Dims(map) = attr else {
                return Err("no dims".into());
            };
            let xt = x.ok_or("no operand")?;
            // The operand with size-1 axes where it is copied, then expanded.
            let mut ones: Vec<Dim> = vec![Dim::Known(1); dims.len()];
            for (i, &d) in map.iter().enumerate() {
                ones[d] = xt.shape.dims()[i].clone();
            }
            let s1 = g.shape(&ones)?;
            let r = g.node("Reshape", &[a[0], &s1], vec![]);
            let s2 = g.shape(&dims)?;
            g.node("Expand", &[&r, &s2], vec![])
        }
        Op::Reshape => {
            let s = g.shape(&dims)?;
            g.node("Reshape", &[a[0], &s], vec![])
        }
        Op::Transpose => {
            let Attr::Perm(p) = attr else {
                return Err("no perm".into());
            };
            let p: Vec<i64> = p.iter().map(|&v| v as i64).collect();
            g.node("Transpose", a, vec![attr_ints("perm", &p)])
        }
        Op::Const => {
            let Attr::Value(v) = attr else {
                return Err("no value".into());
            };
            let s = g.shape(&dims)?;
            let value = tensor("value", elem(ty.dtype), &[1], &[*v]);
            g.node("ConstantOfShape", &[&s], vec![attr_tensor("value", value)])
        }
        // nnc truncates a float toward zero when it becomes an integer; so does ONNX's Cast.
        Op::Cast => g.node("Cast", a, vec![attr_int("to", elem(ty.dtype) as i64)]),
        Op::OneHot => {
            let classes = dims.last().and_then(known).ok_or("unknown class count")?;
            let depth = g.ints(&[classes]);
            let name = g.fresh("c");
            g.inits
                .push(tensor(&name, elem(ty.dtype), &[2], &[0.0, 1.0]));
            // nnc gives all zeros for a label outside 0..N; ONNX counts negative labels
            // from the end, so they are mapped past N first.
            let xt = x.ok_or("no operand")?;
            let zero = g.scalar(elem(xt.dtype), 0.0);
            let neg = g.node("Less", &[a[0], &zero], vec![]);
            let past = g.scalar(elem(xt.dtype), classes as f64);
            let ids = g.node("Where", &[&neg, &past, a[0]], vec![]);
            // onnxruntime implements OneHot for int64 indices.
            let ids = g.node("Cast", &[&ids], vec![attr_int("to", INT64 as i64)]);
            g.node("OneHot", &[&ids, &depth, &name], vec![attr_int("axis", -1)])
        }
        Op::Im2col => {
            let Attr::Window {
                kernel,
                stride,
                pad,
            } = *attr
            else {
                return Err("no window".into());
            };
            let (oh, ow) = (
                dims[4].known().ok_or("unknown size")? as i64,
                dims[5].known().ok_or("unknown size")? as i64,
            );
            let (ph, pw) = (pad[0] as i64, pad[1] as i64);
            let padded = if ph + pw > 0 {
                let pads = g.ints(&[0, 0, ph, pw, 0, 0, ph, pw]);
                g.node("Pad", &[a[0], &pads], vec![])
            } else {
                a[0].to_string()
            };
            // Window offset (i, j) is a strided slice [N, C, OH, OW]; they are stacked
            // into [N, C, KH, KW, OH, OW].
            let axes = g.ints(&[2, 3]);
            let steps = g.ints(&[stride[0] as i64, stride[1] as i64]);
            let unsq = g.ints(&[2, 3]);
            let mut rows = Vec::new();
            for i in 0..kernel[0] as i64 {
                let mut cols = Vec::new();
                for j in 0..kernel[1] as i64 {
                    let starts = g.ints(&[i, j]);
                    let ends = g.ints(&[
                        i + stride[0] as i64 * (oh - 1) + 1,
                        j + stride[1] as i64 * (ow - 1) + 1,
                    ]);
                    let s = g.node("Slice", &[&padded, &starts, &ends, &axes, &steps], vec![]);
                    cols.push(g.node("Unsqueeze", &[&s, &unsq], vec![]));
                }
                let refs: Vec<&str> = cols.iter().map(String::as_str).collect();
                rows.push(g.node("Concat", &refs, vec![attr_int("axis", 3)]));
            }
            let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
            g.node("Concat", &refs, vec![attr_int("axis", 2)])
        }
        Op::Slice => {
            let Attr::Offset { axis, start } = *attr else {
                return Err("no offset".into());
            };
            let len = dims[axis].known().ok_or("unknown slice length")? as i64;
            let starts = g.ints(&[start as i64]);
            let ends = g.ints(&[start as i64 + len]);
            let axes = g.ints(&[axis as i64]);
            g.node("Slice", &[a[0], &starts, &ends, &axes], vec![])
        }
        Op::Pad => {
            let Attr::Offset { axis, start } = *attr else {
                return Err("no offset".into());
            };
            let xt = x.ok_or("no operand")?;
            let total = dims[axis].known().ok_or("unknown size")? as i64;
            let len = xt.shape.dims()[axis].known().ok_or("unknown size")? as i64;
            let r = dims.len();
            let mut pads = vec![0i64; 2 * r];
            pads[axis] = start as i64;
            pads[r + axis] = total - start as i64 - len;
            let p = g.ints(&pads);
            g.node("Pad", &[a[0], &p], vec![])
        }
        Op::Iota => {
            let Attr::Axes(ax) = attr else {
                return Err("no axis".into());
            };
            let axis = ax[0];
            let n = dims[axis].known().ok_or("iota along a symbolic axis")? as i64;
            let (s0, s1, s2) = (
                g.scalar(INT64, 0.0),
                g.scalar(INT64, n as f64),
                g.scalar(INT64, 1.0),
            );
            let range = g.node("Range", &[&s0, &s1, &s2], vec![]);
            let mut ones: Vec<Dim> = vec![Dim::Known(1); dims.len()];
            ones[axis] = Dim::Known(n as u64);
            let s = g.shape(&ones)?;
            let r = g.node("Reshape", &[&range, &s], vec![]);
            let full = g.shape(&dims)?;
            let e = g.node("Expand", &[&r, &full], vec![]);
            g.node("Cast", &[&e], vec![attr_int("to", elem(ty.dtype) as i64)])
        }
        Op::Concat => {
            let Attr::Axis(axis) = *attr else {
                return Err("no axis".into());
            };
            g.node("Concat", a, vec![attr_int("axis", axis as i64)])
        }
        Op::Gather => {
            let Attr::Index { axis, .. } = *attr else {
                return Err("no axis".into());
            };
            g.node("Gather", a, vec![attr_int("axis", axis as i64)])
        }
        // Decomposed (opset 17 has no attention operator): the scores, the causal mask as
        // a constant, Softmax, the product with v.
        Op::Attention => {
            let Attr::Causal(causal) = *attr else {
                return Err("no causal flag".into());
            };
            let r = dims.len();
            let d = dims[r - 1].known().ok_or("unknown head width")?;
            let perm: Vec<i64> = (0..r as i64 - 2)
                .chain([r as i64 - 1, r as i64 - 2])
                .collect();
            let kt = g.node("Transpose", &[a[1]], vec![attr_ints("perm", &perm)]);
            let s = g.node("MatMul", &[a[0], &kt], vec![]);
            let scale = g.scalar(elem(ty.dtype), 1.0 / (d as f64).sqrt());
            let mut s = g.node("Mul", &[&s, &scale], vec![]);
            if causal {
                let tq = dims[r - 2].known().ok_or("unknown query count")? as usize;
                let keys = xs.get(1).and_then(|k| k.shape.dims()[r - 2].known());
                let tk = keys.ok_or("unknown key count")? as usize;
                // Query i sees keys j <= i.
                let vals: Vec<f64> = (0..tq * tk)
                    .map(|e| f64::from(u8::from(e % tk <= e / tk)))
                    .collect();
                let mask = g.fresh("c");
                g.inits
                    .push(tensor(&mask, BOOL, &[tq as i64, tk as i64], &vals));
                let low = g.scalar(elem(ty.dtype), -1e9);
                s = g.node("Where", &[&mask, &s, &low], vec![]);
            }
            let p = g.node("Softmax", &[&s], vec![attr_int("axis", -1)]);
            g.node("MatMul", &[&p, a[2]], vec![])
        }
        Op::Col2im
        | Op::AttentionGrad
        | Op::ScatterAdd
        | Op::Random
        | Op::Cotangent
        | Op::CustomGrad
        | Op::Scan
        | Op::ScanOut
        | Op::LoopVar => {
            return Err("has no ONNX mapping".into());
        }
    })
}
