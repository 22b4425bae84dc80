//! Prints the IR as text. The output of `print` is accepted by `parse::parse_module`, and
//! printing what was parsed gives the same text again.
//!
//! ```text
//! func @Mlp(%x: f32[B, 64]) -> f32[B, 10] {
//!   param %h.w: f32[64, 10] = uniform(-0.1, 0.1)
//!   %0 = matmul %x, %h.w : f32[B, 10]
//!   return %0
//! }
//! ```
//!
//! Nodes are numbered densely in order; inputs and parameters print by name.

use std::fmt::{self, Write};

use crate::graph::{Func, Init, Module, Node, ParamKind, Value};
use crate::op::Attr;

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, func) in self.funcs.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{func}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_func(self, &|_| None))
    }
}

/// Prints a function, with an optional `; note` after the line of some nodes (the
/// verifier's errors, the JIT's buffer and fusion plan).
pub fn print_func(func: &Func, note: &dyn Fn(usize) -> Option<String>) -> String {
    let mut out = String::new();
    write!(out, "func @{}(", func.name).unwrap();
    for (i, arg) in func.inputs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write!(out, "%{}: {}", arg.name, arg.ty).unwrap();
    }
    out.push_str(") -> ");
    let outs = func.output_types();
    if outs.len() == 1 {
        write!(out, "{}", outs[0]).unwrap();
    } else {
        out.push('(');
        for (i, ty) in outs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write!(out, "{ty}").unwrap();
        }
        out.push(')');
    }
    out.push_str(" {\n");
    for p in &func.params {
        let kw = match p.kind {
            ParamKind::Param => "param",
            ParamKind::State => "state",
            ParamKind::Buffer => "buffer",
        };
        writeln!(out, "  {kw} %{}: {} = {}", p.name, p.ty, init_text(&p.init)).unwrap();
    }
    for (i, node) in func.nodes.iter().enumerate() {
        write!(out, "  %{i} = {}", node_text(func, node)).unwrap();
        if let Some(n) = note(i) {
            write!(out, "  ; {n}").unwrap();
        }
        out.push('\n');
    }
    out.push_str("  return");
    for (i, &v) in func.outputs.iter().enumerate() {
        out.push_str(if i == 0 { " " } else { ", " });
        out.push_str(&value_name(func, v));
    }
    out.push_str("\n}\n");
    out
}

/// The printed name of a value: `%x`, `%h1.w`, `%3`.
pub fn value_name(func: &Func, v: Value) -> String {
    match v {
        Value::Input(i) => format!("%{}", func.inputs[i as usize].name),
        Value::Param(i) => format!("%{}", func.params[i as usize].name),
        Value::Node(i) => format!("%{i}"),
    }
}

fn node_text(func: &Func, node: &Node) -> String {
    let mut s = node.op.mnemonic().to_string();
    if let Attr::Value(v) = node.attr {
        write!(s, " {}", float_text(v)).unwrap();
    }
    for (i, &a) in node.args.iter().enumerate() {
        s.push_str(if i == 0 { " " } else { ", " });
        s.push_str(&value_name(func, a));
    }
    let list = |name: &str, xs: &[usize]| {
        let items: Vec<String> = xs.iter().map(|x| x.to_string()).collect();
        format!(", {name}=[{}]", items.join(", "))
    };
    let attr_start = s.len();
    match &node.attr {
        Attr::Axes(xs) => s.push_str(&list("axes", xs)),
        Attr::Dims(xs) => s.push_str(&list("dims", xs)),
        Attr::Perm(xs) => s.push_str(&list("perm", xs)),
        Attr::Window {
            kernel,
            stride,
            pad,
        } => {
            s.push_str(&list("kernel", kernel));
            s.push_str(&list("stride", stride));
            s.push_str(&list("pad", pad));
        }
        Attr::Offset { axis, start } => write!(s, ", axis={axis}, start={start}").unwrap(),
        Attr::Index { axis, line } => write!(s, ", axis={axis}, line={line}").unwrap(),
        Attr::Axis(axis) => write!(s, ", axis={axis}").unwrap(),
        Attr::Output(k) => write!(s, ", output={k}").unwrap(),
        Attr::Causal(c) => write!(s, ", causal={}", *c as u8).unwrap(),
        Attr::Loop(l) => write!(
            s,
            ", carries={}, sequences={}, reverse={}",
            l.carries, l.sequences, l.reverse as u8
        )
        .unwrap(),
        Attr::None | Attr::Value(_) => {}
    }
    // With no operands, the attribute follows the mnemonic directly (`iota axes=[1]`).
    if node.args.is_empty() && s[attr_start..].starts_with(", ") {
        s.replace_range(attr_start..attr_start + 2, " ");
    }
    write!(s, " : {}", node.ty).unwrap();
    // A scan's body follows it, indented.
    if let Attr::Loop(l) = &node.attr {
        for line in print_func(&l.body, &|_| None).lines() {
            write!(s, "\n    {line}").unwrap();
        }
    }
    s
}

/// A float printed so that parsing it gives the same bits back (`1.0`, `0.001`, `1e-8`,
/// `inf`, `-inf`, `nan`).
pub fn float_text(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:?}")
    }
}

fn init_text(init: &Init) -> String {
    match init {
        Init::Zeros => "zeros".into(),
        Init::Ones => "ones".into(),
        Init::Fill(v) => format!("fill({})", float_text(*v)),
        Init::Normal { mean, std } => {
            format!("normal({}, {})", float_text(*mean), float_text(*std))
        }
        Init::Uniform { lo, hi } => format!("uniform({}, {})", float_text(*lo), float_text(*hi)),
    }
}
