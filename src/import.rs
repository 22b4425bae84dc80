//! `nnc import`: an ONNX model (an MLP or a CNN, from PyTorch or from `nnc export`) as a
//! `.nn` file and a checkpoint, so that it can be evaluated, fine-tuned (`nnc train
//! --init`), built and exported again with nnc.
//!
//! Each ONNX node of the supported subset becomes one statement calling the prelude layer
//! that computes it (`Gemm` -> `dense`, `Conv` -> `conv2d`, `BatchNormalization` ->
//! `batch_norm2d`, ...), named `h1`, `h2`, ..., so its parameters are `h3.w`, `h3.b` as nnc
//! names them; the initializers become those parameters (transposed where ONNX's layout
//! differs). Anything outside the subset is refused with the node's operator and name,
//! and nothing is written. The generated text is checked by nnc's own front end before
//! anything is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;
use nnc_runtime::checkpoint::write_atomic;
use onnx_protobuf::{AttributeProto, ModelProto, NodeProto, TensorProto, tensor_shape_proto};
use protobuf::Message;

use crate::Failed;
use crate::train_cmds::fail;

#[derive(Args)]
pub struct ImportArgs {
    /// The ONNX model.
    file: PathBuf,
    /// The folder to write `model.nn` and `checkpoint.safetensors` into.
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// The model's name in the `.nn` file (default: the ONNX metadata's `model`, else
    /// the graph's name, else `Imported`).
    #[arg(long)]
    name: Option<String>,
    /// Replace `model.nn` and `checkpoint.safetensors` if DIR already holds them.
    #[arg(long)]
    force: bool,
}

/// A shape: `None` is the batch.
type Dims = Vec<Option<usize>>;

/// A value of the graph as the `.nn` text names it, with its shape (`None` for the batch).
#[derive(Clone, Debug)]
struct Val {
    name: String,
    shape: Vec<Option<usize>>,
}

/// An initializer: its dimensions and values.
#[derive(Clone, Debug)]
struct Init {
    dims: Vec<usize>,
    data: Vec<f32>,
}

/// What the import makes: the model's statements, its parameters by nnc's names, and
/// whether its output is class scores (logits) a train block can use.
struct Imported {
    input: Val,
    body: Vec<String>,
    params: Vec<(String, Vec<usize>, Vec<f32>)>,
    output: Val,
    logits: bool,
}

pub fn import(a: ImportArgs) -> Result<(), Failed> {
    let bytes = std::fs::read(&a.file)
        .map_err(|e| fail(format!("cannot read `{}`: {e}", a.file.display())))?;
    let model = ModelProto::parse_from_bytes(&bytes)
        .map_err(|e| fail(format!("`{}` is not an ONNX model: {e}", a.file.display())))?;
    let imported = translate(&model).map_err(|e| fail(format!("{}: {e}", a.file.display())))?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => model_name(&model),
    };
    if !is_ident(&name) {
        return Err(fail(format!(
            "`{name}` is not a model name (letters, digits and `_`, not starting with a digit); give one with --name"
        )));
    }
    let src = source(&a.file, &name, &imported);
    // The front end checks what was generated; a failure here is a bug of the import.
    let checked = nnc_lang::check(&src).map_err(|d| {
        let text = nnc::render_plain("model.nn", &src, &d);
        fail(format!(
            "internal error: the generated model does not check (a bug in nnc import):\n{text}"
        ))
    })?;
    let spec = checked.trains.first().cloned();
    let m = nnc_train::Model::new(&checked.module, &name, spec.as_ref()).map_err(fail)?;
    let config = match &spec {
        Some(s) => nnc_train::TrainConfig::from_spec(s, Path::new(".")),
        None => nnc_train::TrainConfig::inference(&name),
    };
    let mut session = nnc_train::Session::new(m, config).map_err(fail)?;
    let by_name: HashMap<&str, &(String, Vec<usize>, Vec<f32>)> =
        imported.params.iter().map(|p| (p.0.as_str(), p)).collect();
    let names: Vec<String> = session
        .model
        .param_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (i, n) in names.iter().enumerate() {
        let Some((_, dims, data)) = by_name.get(n.as_str()) else {
            return Err(fail(format!(
                "internal error: the model's `{n}` has no initializer"
            )));
        };
        let t = &mut session.params[i];
        if t.shape != *dims {
            return Err(fail(format!(
                "internal error: `{n}` is {:?} in the model, {dims:?} in the ONNX file",
                t.shape
            )));
        }
        t.data = data.iter().map(|&v| f64::from(v)).collect();
    }
    // Nothing is written before everything is known to work.
    let nn = a.output.join("model.nn");
    let ck = a.output.join("checkpoint.safetensors");
    if !a.force {
        for p in [&nn, &ck] {
            if p.exists() {
                return Err(fail(format!(
                    "`{}` exists; pass --force to replace it",
                    p.display()
                )));
            }
        }
    }
    std::fs::create_dir_all(&a.output)
        .map_err(|e| fail(format!("cannot create `{}`: {e}", a.output.display())))?;
    write_atomic(&nn, src.as_bytes()).map_err(fail)?;
    session.to_checkpoint().save(&ck).map_err(fail)?;
    let count: usize = imported.params.iter().map(|p| p.2.len()).sum();
    println!(
        "wrote {} and {} (model `{name}`, {} layers, {count} parameter values)",
        nn.display(),
        ck.display(),
        imported.body.len()
    );
    Ok(())
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// `--name`'s default: the metadata nnc export writes, else the graph's name in
/// CamelCase, else `Imported`.
fn model_name(m: &ModelProto) -> String {
    if let Some(p) = m.metadata_props.iter().find(|p| p.key == "model")
        && is_ident(&p.value)
    {
        return p.value.clone();
    }
    let camel: String = m
        .graph
        .name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    if is_ident(&camel) {
        camel
    } else {
        "Imported".into()
    }
}

fn source(file: &Path, name: &str, m: &Imported) -> String {
    let ty = |v: &Val| {
        let dims: Vec<String> = v
            .shape
            .iter()
            .map(|d| d.map_or("B".to_string(), |n| n.to_string()))
            .collect();
        format!("f32[{}]", dims.join(", "))
    };
    let from = file
        .file_name()
        .map_or(String::new(), |f| f.to_string_lossy().to_string());
    let mut s = format!(
        "# Imported from `{from}` by `nnc import`: one statement per ONNX node; the weights\n# are in checkpoint.safetensors.\n\nmodel {name}({}: {}) -> {} {{\n",
        m.input.name,
        ty(&m.input),
        ty(&m.output)
    );
    for line in &m.body {
        s.push_str(&format!("    {line}\n"));
    }
    s.push_str(&format!("    return {}\n}}\n", m.output.name));
    if m.logits {
        s.push_str(&format!(
            "\n# Fine-tune with `nnc train model.nn --init checkpoint.safetensors --data FILE`.\ntrain {name}(y: i32[B]) {{\n    loss = cross_entropy(output, y)\n    optimizer = adam(lr = 1e-4)\n}}\n"
        ));
    }
    s
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

fn attr_f(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map_or(default, |a| a.f)
}

fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

/// An initializer's floats (ONNX `FLOAT` in `float_data` or `raw_data`; `INT64` for
/// shapes).
fn init_of(t: &TensorProto) -> Result<Init, String> {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = dims.iter().product();
    let data: Vec<f32> = match t.data_type {
        1 if !t.float_data.is_empty() => t.float_data.clone(),
        1 => t
            .raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        7 if !t.int64_data.is_empty() => t.int64_data.iter().map(|&v| v as f32).collect(),
        7 => t
            .raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        d => {
            return Err(format!(
                "initializer `{}` has ONNX data type {d}, not float",
                t.name
            ));
        }
    };
    if data.len() != n {
        return Err(format!(
            "initializer `{}` holds {} values for its shape {dims:?}",
            t.name,
            data.len()
        ));
    }
    Ok(Init { dims, data })
}

/// The inputs of `n` that are shapes computed in the graph.
fn shapes_of<'a>(n: &'a NodeProto, shapes: &HashMap<String, Vec<Option<i64>>>) -> Vec<&'a str> {
    n.input
        .iter()
        .filter(|i| shapes.contains_key(i.as_str()))
        .map(String::as_str)
        .collect()
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Literal text for an ONNX float (an f32): 7 significant digits, which read back as the
/// same f32 (`0.1`, not `0.10000000149011612`).
fn lit(v: f32) -> String {
    let short: f64 = format!("{v:.6e}").parse().unwrap_or(f64::from(v));
    let s = format!("{short:?}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

fn translate(model: &ModelProto) -> Result<Imported, String> {
    let g = &model.graph;
    let mut inits: HashMap<String, Init> = HashMap::new();
    for t in &g.initializer {
        inits.insert(t.name.clone(), init_of(t)?);
    }
    for n in &g.node {
        if n.op_type == "Constant"
            && let (Some(out), Some(a)) = (n.output.first(), attr(n, "value"))
        {
            inits.insert(out.clone(), init_of(&a.t)?);
        }
    }
    let inputs: Vec<_> = g
        .input
        .iter()
        .filter(|i| !inits.contains_key(&i.name))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(format!(
            "the graph has {} inputs besides its initializers; nnc import takes models with one",
            inputs.len()
        ));
    };
    let dims = &input.type_.tensor_type().shape.dim;
    if dims.is_empty() {
        return Err(format!("input `{}` has no shape", input.name));
    }
    if input.type_.tensor_type().elem_type != 1 {
        return Err(format!("input `{}` is not float32", input.name));
    }
    let mut shape = vec![None];
    for d in &dims[1..] {
        match &d.value {
            Some(tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => {
                shape.push(Some(*v as usize))
            }
            _ => {
                return Err(format!(
                    "input `{}` has a symbolic dimension after the batch",
                    input.name
                ));
            }
        }
    }
    let x = Val {
        name: "x".into(),
        shape,
    };
    let mut vals: HashMap<String, Val> = HashMap::new();
    vals.insert(input.name.clone(), x.clone());
    let mut body = Vec::new();
    let mut params = Vec::new();
    let mut skip = vec![false; g.node.len()];
    // Shapes computed in the graph (`Shape` of a value and arithmetic on it), by name;
    // `None` is the batch.
    let mut shapes: HashMap<String, Vec<Option<i64>>> = HashMap::new();
    let mut last_op = String::new();
    // Who reads each value (to fold a MatMul's bias Add).
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for a in &n.input {
            readers.entry(a.as_str()).or_default().push(i);
        }
    }
    for (i, n) in g.node.iter().enumerate() {
        if skip[i] || n.op_type == "Constant" {
            continue;
        }
        let what = || format!("`{}` (node `{}`)", n.op_type, n.name);
        let val = |k: usize| -> Result<Val, String> {
            let name = n
                .input
                .get(k)
                .ok_or_else(|| format!("{} lacks input {k}", what()))?;
            vals.get(name).cloned().ok_or_else(|| {
                format!(
                    "{}: input `{name}` is not a value nnc import follows",
                    what()
                )
            })
        };
        let init = |k: usize| -> Result<&Init, String> {
            let name = n
                .input
                .get(k)
                .ok_or_else(|| format!("{} lacks input {k}", what()))?;
            inits
                .get(name)
                .ok_or_else(|| format!("{}: input `{name}` is not an initializer", what()))
        };
        let h = format!("h{}", body.len() + 1);
        let rank = |v: &Val| v.shape.len();
        let feature = |v: &Val, k: usize| v.shape.get(k).copied().flatten();
        let (line, shape): (String, Vec<Option<usize>>) = match n.op_type.as_str() {
            "Gemm" | "MatMul" => {
                let a = val(0)?;
                let b = init(1)?;
                let gemm = n.op_type == "Gemm";
                if gemm
                    && (attr_f(n, "alpha", 1.0) != 1.0
                        || attr_i(n, "transA", 0) != 0
                        || (n.input.len() > 2 && attr_f(n, "beta", 1.0) != 1.0))
                {
                    return Err(format!(
                        "{}: only alpha = beta = 1 and transA = 0 are imported",
                        what()
                    ));
                }
                if rank(&a) != 2 || b.dims.len() != 2 {
                    return Err(format!(
                        "{}: only a product of rows [B, K] by a matrix is imported",
                        what()
                    ));
                }
                let trans_b = gemm && attr_i(n, "transB", 0) != 0;
                let (k, units) = if trans_b {
                    (b.dims[1], b.dims[0])
                } else {
                    (b.dims[0], b.dims[1])
                };
                if feature(&a, 1) != Some(k) {
                    return Err(format!("{}: {k} inputs for rows of {:?}", what(), a.shape));
                }
                let w = if trans_b {
                    transpose(&b.data, units, k)
                } else {
                    b.data.clone()
                };
                // The bias: Gemm's C, or the Add right after a MatMul.
                let mut bias = vec![0.0; units];
                if gemm && n.input.len() > 2 {
                    let c = init(2)?;
                    match c.data.len() {
                        l if l == units => bias = c.data.clone(),
                        1 => bias = vec![c.data[0]; units],
                        _ => return Err(format!("{}: a bias of shape {:?}", what(), c.dims)),
                    }
                } else if !gemm
                    && let Some(out) = n.output.first()
                    && let Some([j]) = readers.get(out.as_str()).map(Vec::as_slice)
                    && g.node[*j].op_type == "Add"
                    && let Some(other) = g.node[*j].input.iter().find(|s| *s != out)
                    && let Some(c) = inits.get(other)
                    && c.data.len() == units
                {
                    bias = c.data.clone();
                    skip[*j] = true;
                    // The Add's result is this dense's.
                    vals.insert(
                        g.node[*j].output[0].clone(),
                        Val {
                            name: h.clone(),
                            shape: vec![None, Some(units)],
                        },
                    );
                }
                params.push((format!("{h}.w"), vec![k, units], w));
                params.push((format!("{h}.b"), vec![units], bias));
                (
                    format!("{h} = dense({}, {units})", a.name),
                    vec![None, Some(units)],
                )
            }
            "Conv" => {
                let a = val(0)?;
                let w = init(1)?;
                if rank(&a) != 4 || w.dims.len() != 4 {
                    return Err(format!(
                        "{}: only 2-D convolutions of [N, C, H, W] are imported",
                        what()
                    ));
                }
                let (o, c, kh, kw) = (w.dims[0], w.dims[1], w.dims[2], w.dims[3]);
                let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
                let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
                let dil = attr_ints(n, "dilations").unwrap_or(vec![1, 1]);
                let auto = attr(n, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).to_string());
                if kh != kw
                    || attr_i(n, "group", 1) != 1
                    || dil.iter().any(|&d| d != 1)
                    || strides.len() != 2
                    || strides[0] != strides[1]
                    || pads.iter().any(|&p| p != pads[0])
                    || auto.as_deref().is_some_and(|s| s != "NOTSET")
                    || feature(&a, 1) != Some(c)
                {
                    return Err(format!(
                        "{}: only square kernels, equal strides and padding on every side, one group, no dilation are imported",
                        what()
                    ));
                }
                let (s, p) = (strides[0] as usize, pads[0] as usize);
                let b = if n.input.len() > 2 {
                    init(2)?.data.clone()
                } else {
                    vec![0.0; o]
                };
                params.push((format!("{h}.w"), w.dims.clone(), w.data.clone()));
                params.push((format!("{h}.b"), vec![o], b));
                let out = |d: Option<usize>| d.map(|d| (d + 2 * p - kh) / s + 1);
                let shape = vec![None, Some(o), out(a.shape[2]), out(a.shape[3])];
                (
                    format!(
                        "{h} = conv2d({}, {o}, {kh}, stride = {s}, padding = {p})",
                        a.name
                    ),
                    shape,
                )
            }
            "MaxPool" | "AveragePool" => {
                let a = val(0)?;
                let k = attr_ints(n, "kernel_shape").unwrap_or_default();
                let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
                let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
                let max = n.op_type == "MaxPool";
                if rank(&a) != 4
                    || k.len() != 2
                    || k[0] != k[1]
                    || strides.len() != 2
                    || strides[0] != strides[1]
                    || pads.iter().any(|&p| p != pads[0])
                    || attr_i(n, "ceil_mode", 0) != 0
                    || (max && pads[0] != 0)
                    || (!max && pads[0] != 0 && attr_i(n, "count_include_pad", 0) != 1)
                    || n.output.len() > 1
                {
                    return Err(format!(
                        "{}: only square windows with equal strides, no ceil mode{} are imported",
                        what(),
                        if max {
                            " and no padding"
                        } else {
                            ", padding counted"
                        }
                    ));
                }
                let (k, s, p) = (k[0] as usize, strides[0] as usize, pads[0] as usize);
                let out = |d: Option<usize>| d.map(|d| (d + 2 * p - k) / s + 1);
                let shape = vec![None, a.shape[1], out(a.shape[2]), out(a.shape[3])];
                let line = if max {
                    format!("{h} = max_pool2d({}, {k}, stride = {s})", a.name)
                } else {
                    format!(
                        "{h} = avg_pool2d({}, {k}, stride = {s}, padding = {p})",
                        a.name
                    )
                };
                (line, shape)
            }
            "BatchNormalization" => {
                let a = val(0)?;
                let c = feature(&a, 1).ok_or_else(|| format!("{}: no channels", what()))?;
                let layer = match rank(&a) {
                    2 => "batch_norm",
                    4 => "batch_norm2d",
                    r => return Err(format!("{}: rank {r} is not imported", what())),
                };
                for (k, p) in ["gamma", "beta", "running_mean", "running_var"]
                    .iter()
                    .enumerate()
                {
                    let t = init(k + 1)?;
                    if t.data.len() != c {
                        return Err(format!(
                            "{}: `{p}` has {} values for {c} channels",
                            what(),
                            t.data.len()
                        ));
                    }
                    params.push((format!("{h}.{p}"), vec![c], t.data.clone()));
                }
                // ONNX's momentum weighs the running value, nnc's (PyTorch's) the new one.
                let momentum = (1.0 - f64::from(attr_f(n, "momentum", 0.9))) as f32;
                let eps = attr_f(n, "epsilon", 1e-5);
                (
                    format!(
                        "{h} = {layer}({}, momentum = {}, eps = {})",
                        a.name,
                        lit(momentum),
                        lit(eps)
                    ),
                    a.shape.clone(),
                )
            }
            "LayerNormalization" => {
                let a = val(0)?;
                let d = a
                    .shape
                    .last()
                    .copied()
                    .flatten()
                    .ok_or_else(|| format!("{}: no features", what()))?;
                if !matches!(attr_i(n, "axis", -1), -1)
                    && attr_i(n, "axis", -1) != rank(&a) as i64 - 1
                {
                    return Err(format!(
                        "{}: only normalization over the last axis is imported",
                        what()
                    ));
                }
                params.push((format!("{h}.gamma"), vec![d], init(1)?.data.clone()));
                let beta = if n.input.len() > 2 {
                    init(2)?.data.clone()
                } else {
                    vec![0.0; d]
                };
                params.push((format!("{h}.beta"), vec![d], beta));
                let eps = attr_f(n, "epsilon", 1e-5);
                (
                    format!("{h} = layer_norm({}, eps = {})", a.name, lit(eps)),
                    a.shape.clone(),
                )
            }
            "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Abs" | "Erf" | "Sin"
            | "Cos" => {
                let a = val(0)?;
                let f = n.op_type.to_lowercase();
                (format!("{h} = {f}({})", a.name), a.shape.clone())
            }
            "Neg" => {
                let a = val(0)?;
                (format!("{h} = -{}", a.name), a.shape.clone())
            }
            "LeakyRelu" => {
                let a = val(0)?;
                let slope = attr_f(n, "alpha", 0.01);
                (
                    format!("{h} = leaky_relu({}, slope = {})", a.name, lit(slope)),
                    a.shape.clone(),
                )
            }
            "Softmax" | "LogSoftmax" => {
                let a = val(0)?;
                let axis = attr_i(n, "axis", -1);
                let last = axis == -1 || axis == rank(&a) as i64 - 1;
                if !last {
                    return Err(format!("{}: only the last axis is imported", what()));
                }
                let f = if n.op_type == "Softmax" {
                    "softmax"
                } else {
                    "log_softmax"
                };
                (format!("{h} = {f}({})", a.name), a.shape.clone())
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let sym = match n.op_type.as_str() {
                    "Add" => "+",
                    "Sub" => "-",
                    "Mul" => "*",
                    _ => "/",
                };
                let side = |k: usize| -> Result<(String, Option<Dims>), String> {
                    if let Ok(v) = val(k) {
                        return Ok((v.name, Some(v.shape)));
                    }
                    let c = init(k)?;
                    if c.data.len() != 1 {
                        return Err(format!(
                            "{}: a constant of shape {:?} (only scalars, and a product's bias, are imported)",
                            what(),
                            c.dims
                        ));
                    }
                    Ok((lit(c.data[0]), None))
                };
                let (a, sa) = side(0)?;
                let (b, sb) = side(1)?;
                let shape = match (sa, sb) {
                    (Some(x), Some(y)) if x != y => {
                        return Err(format!("{}: operands of shapes {x:?} and {y:?}", what()));
                    }
                    (Some(x), _) | (None, Some(x)) => x,
                    (None, None) => return Err(format!("{}: of two constants", what())),
                };
                (format!("{h} = {a} {sym} {b}"), shape)
            }
            "Shape" => {
                let a = val(0)?;
                shapes.insert(
                    n.output[0].clone(),
                    a.shape.iter().map(|d| d.map(|v| v as i64)).collect(),
                );
                continue;
            }
            "Gather" | "Concat" if !shapes_of(n, &shapes).is_empty() || n.op_type == "Concat" => {
                // Shape arithmetic on a shape read off a value: `Shape`, `Gather` of its
                // entries, `Concat` with constants (what exporters write to reshape a
                // batch of any size).
                let part = |k: usize| -> Result<Vec<Option<i64>>, String> {
                    let name = &n.input[k];
                    if let Some(sv) = shapes.get(name) {
                        return Ok(sv.clone());
                    }
                    let c = inits.get(name).ok_or_else(|| {
                        format!(
                            "{}: input `{name}` is not a shape nnc import follows",
                            what()
                        )
                    })?;
                    Ok(c.data.iter().map(|&v| Some(v as i64)).collect())
                };
                let sv = if n.op_type == "Gather" {
                    let from = part(0)?;
                    let idx = part(1)?;
                    idx.iter()
                        .map(|i| {
                            let i = i.unwrap_or(0);
                            let i = if i < 0 { i + from.len() as i64 } else { i };
                            from.get(i as usize)
                                .copied()
                                .ok_or_else(|| format!("{}: index {i}", what()))
                        })
                        .collect::<Result<Vec<_>, String>>()?
                } else {
                    if attr_i(n, "axis", 0) != 0 {
                        return Err(format!("{}: only shapes are concatenated", what()));
                    }
                    let mut all = Vec::new();
                    for k in 0..n.input.len() {
                        all.extend(part(k)?);
                    }
                    all
                };
                shapes.insert(n.output[0].clone(), sv);
                continue;
            }
            "Flatten" | "Reshape" => {
                let a = val(0)?;
                let flat: Option<usize> = a.shape[1..].iter().copied().product();
                let target: Vec<Option<i64>> = if n.op_type == "Flatten" {
                    if attr_i(n, "axis", 1) != 1 {
                        return Err(format!(
                            "{}: only flattening after the batch axis is imported",
                            what()
                        ));
                    }
                    vec![None, flat.map(|f| f as i64)]
                } else if let Some(sv) = n.input.get(1).and_then(|t| shapes.get(t)) {
                    sv.clone()
                } else {
                    init(1)?.data.iter().map(|&v| Some(v as i64)).collect()
                };
                // Resolve 0 (copy) and -1 (infer); the batch stays first.
                let mut dims: Vec<Option<usize>> = Vec::new();
                let mut infer = None;
                for (k, d) in target.iter().enumerate() {
                    match d {
                        None => dims.push(None),
                        Some(0) => dims.push(
                            *a.shape
                                .get(k)
                                .ok_or_else(|| format!("{}: copies axis {k}", what()))?,
                        ),
                        Some(-1) => {
                            infer = Some(k);
                            dims.push(Some(1));
                        }
                        Some(v) if *v > 0 => dims.push(Some(*v as usize)),
                        Some(v) => return Err(format!("{}: dimension {v}", what())),
                    }
                }
                let known: Option<usize> = dims[1..].iter().copied().product();
                if let (Some(k), Some(f), Some(known)) = (infer, flat, known) {
                    if k == 0 || f % known != 0 {
                        return Err(format!("{}: cannot infer axis {k}", what()));
                    }
                    dims[k] = Some(f / known);
                }
                let ok = dims.first() == Some(&None)
                    && dims[1..].iter().all(Option::is_some)
                    && dims[1..].iter().copied().product::<Option<usize>>() == flat;
                if !ok {
                    return Err(format!(
                        "{}: only reshapes that keep the batch first and its rows' size are imported ({:?} to {target:?})",
                        what(),
                        a.shape
                    ));
                }
                if dims == a.shape {
                    vals.insert(n.output[0].clone(), a);
                    continue;
                }
                if rank(&a) == 4 && dims.len() == 2 {
                    (format!("{h} = flatten({})", a.name), dims)
                } else {
                    let text: Vec<String> = dims
                        .iter()
                        .map(|d| d.map_or("B".to_string(), |v| v.to_string()))
                        .collect();
                    (
                        format!("{h} = reshape({}, [{}])", a.name, text.join(", ")),
                        dims,
                    )
                }
            }
            "Identity" | "Dropout" => {
                let a = val(0)?;
                vals.insert(n.output[0].clone(), a);
                continue;
            }
            other => {
                return Err(format!(
                    "nnc import does not map ONNX `{other}` (node `{}`); it imports Gemm, MatMul, Add, Sub, Mul, Div, Conv, MaxPool, AveragePool, BatchNormalization, LayerNormalization, Flatten, Reshape (with Shape, Gather and Concat of shapes), Relu, LeakyRelu, Sigmoid, Tanh, Softmax, LogSoftmax and elementwise math",
                    n.name
                ));
            }
        };
        last_op = n.op_type.clone();
        body.push(line);
        if let Some(out) = n.output.first() {
            vals.insert(out.clone(), Val { name: h, shape });
        }
        // A MatMul's folded Add names its result too (inserted above).
    }
    let [out] = g.output.as_slice() else {
        return Err(format!(
            "the graph has {} outputs; nnc import takes one",
            g.output.len()
        ));
    };
    let output = vals.get(&out.name).cloned().ok_or_else(|| {
        format!(
            "output `{}` is not computed by the nodes imported",
            out.name
        )
    })?;
    if output.name == x.name {
        return Err("the graph computes nothing from its input".into());
    }
    let logits = output.shape.len() == 2
        && output.shape[1].is_some_and(|c| c > 1)
        && !matches!(last_op.as_str(), "Softmax" | "LogSoftmax" | "Sigmoid");
    Ok(Imported {
        input: x,
        body,
        params,
        output,
        logits,
    })
}
