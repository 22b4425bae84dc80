//! `nnc draw`: a model as an SVG picture, as Keras' `plot_model` and Caffe's `draw_net`
//! draw one: a box per statement of the model (its source, output type and parameter
//! count), or with `--primitives` per IR node of the optimized forward pass, and an arrow
//! for each value a box reads.

use std::path::PathBuf;

use clap::Args;
use nnc_ir::Value;
use nnc_lang::ast::{Expr, ExprKind, Item, Stmt};

use crate::train_cmds::fail;
use crate::{Failed, load_checked};

#[derive(Args)]
pub struct DrawArgs {
    /// The .nn file.
    file: PathBuf,
    /// The model (default: the first).
    #[arg(long)]
    model: Option<String>,
    /// The SVG file to write (default: standard output).
    #[arg(short, long, value_name = "SVG")]
    output: Option<PathBuf>,
    /// One box per primitive op of the optimized forward pass instead of per statement.
    #[arg(long)]
    primitives: bool,
}

/// One box: its title, its detail line, and the boxes it reads.
struct Node {
    title: String,
    detail: String,
    reads: Vec<usize>,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Input,
    Layer,
    Output,
}

pub fn draw(a: DrawArgs) -> Result<(), Failed> {
    let checked = load_checked(&a.file)?;
    let models: Vec<&nnc_lang::ast::FnDef> = checked
        .program
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Model(m) => Some(m),
            _ => None,
        })
        .collect();
    let def = match &a.model {
        Some(name) => models.iter().find(|m| &m.name.name == name),
        None => models.first(),
    }
    .ok_or_else(|| fail(format!("`{}` has no such model", a.file.display())))?;
    let name = def.name.name.clone();
    let nodes = if a.primitives {
        let module = nnc::optimized_module(&checked.module, None).map_err(fail)?;
        let f = module
            .func(&name)
            .ok_or_else(|| fail(format!("no function `@{name}`")))?;
        primitives(f)
    } else {
        let f = checked
            .module
            .func(&name)
            .ok_or_else(|| fail(format!("no function `@{name}`")))?;
        let made_by = checked.statements.get(&name).cloned().unwrap_or_default();
        statements(def, f, &made_by)
    };
    let svg = render(&name, &nodes);
    match &a.output {
        Some(o) => {
            nnc_runtime::checkpoint::write_atomic(o, svg.as_bytes()).map_err(fail)?;
            println!("wrote {} ({} boxes)", o.display(), nodes.len());
        }
        None => print!("{svg}"),
    }
    Ok(())
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn names_in(e: &Expr, out: &mut Vec<String>) {
    match &e.kind {
        ExprKind::Name(n) => out.push(n.clone()),
        ExprKind::Call { args, .. } => args.iter().for_each(|a| names_in(&a.value, out)),
        ExprKind::Neg(x) | ExprKind::Paren(x) => names_in(x, out),
        ExprKind::Binary { lhs, rhs, .. } => {
            names_in(lhs, out);
            names_in(rhs, out);
        }
        ExprKind::List(xs) => xs.iter().for_each(|x| names_in(x, out)),
        _ => {}
    }
}

/// A box per input, per top-level assignment and for the result.
/// `made_by[i]` is the source offset of the statement that made node `i`.
fn statements(def: &nnc_lang::ast::FnDef, f: &nnc_ir::Func, made_by: &[usize]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut by_name: std::collections::HashMap<String, usize> = Default::default();
    for a in &f.inputs {
        by_name.insert(a.name.clone(), nodes.len());
        nodes.push(Node {
            title: a.name.clone(),
            detail: a.ty.to_string(),
            reads: vec![],
            kind: Kind::Input,
        });
    }
    // The type of the last node a statement made.
    let type_at = |at: usize| {
        (0..f.nodes.len())
            .rev()
            .find(|&i| made_by.get(i) == Some(&at))
            .map(|i| f.nodes[i].ty.to_string())
    };
    // Each trained parameter belongs to the statement that made its first reader.
    let mut params_at: std::collections::HashMap<usize, u64> = Default::default();
    for (k, p) in f.params.iter().enumerate() {
        if p.kind != nnc_ir::ParamKind::Param {
            continue;
        }
        let reader = f
            .nodes
            .iter()
            .position(|n| n.args.contains(&Value::Param(k as u32)));
        if let Some(line) = reader.and_then(|i| made_by.get(i)) {
            let n: u64 = p.ty.shape.dims().iter().filter_map(|d| d.known()).product();
            *params_at.entry(*line).or_default() += n;
        }
    }
    for s in &def.body {
        let line = s.span().start;
        let (title, value, kind, bound) = match s {
            Stmt::Assign { name, value, .. } => (
                format!("{} = {}", name.name, nnc_lang::print::expr(value)),
                value,
                Kind::Layer,
                Some(name.name.clone()),
            ),
            Stmt::Return { value, .. } => (
                format!("return {}", nnc_lang::print::expr(value)),
                value,
                Kind::Output,
                None,
            ),
            _ => continue,
        };
        let mut read = Vec::new();
        names_in(value, &mut read);
        let mut reads: Vec<usize> = read
            .iter()
            .filter_map(|n| by_name.get(n).copied())
            .collect();
        reads.sort_unstable();
        reads.dedup();
        let ty = type_at(line).unwrap_or_else(|| {
            // A value that made no node of its own (a name passed on).
            reads
                .first()
                .map(|&r| {
                    nodes[r]
                        .detail
                        .split(" · ")
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_default()
        });
        let p = params_at.get(&line).copied().unwrap_or(0);
        let detail = if p > 0 {
            format!("{ty} · {} params", count(p))
        } else {
            ty
        };
        if let Some(b) = bound {
            by_name.insert(b, nodes.len());
        }
        nodes.push(Node {
            title,
            detail,
            reads,
            kind,
        });
    }
    nodes
}

/// A box per input and per node of the optimized forward pass.
fn primitives(f: &nnc_ir::Func) -> Vec<Node> {
    let mut nodes: Vec<Node> = f
        .inputs
        .iter()
        .map(|a| Node {
            title: a.name.clone(),
            detail: a.ty.to_string(),
            reads: vec![],
            kind: Kind::Input,
        })
        .collect();
    let k = nodes.len();
    for (i, n) in f.nodes.iter().enumerate() {
        let mut reads = Vec::new();
        let mut params = Vec::new();
        for a in &n.args {
            match *a {
                Value::Input(j) => reads.push(j as usize),
                Value::Node(j) => reads.push(k + j as usize),
                Value::Param(j) => params.push(f.params[j as usize].name.clone()),
            }
        }
        let out = f.outputs.contains(&Value::Node(i as u32));
        nodes.push(Node {
            title: if params.is_empty() {
                format!("%{i} = {}", n.op.mnemonic())
            } else {
                format!("%{i} = {} {}", n.op.mnemonic(), params.join(", "))
            },
            detail: n.ty.to_string(),
            reads,
            kind: if out { Kind::Output } else { Kind::Layer },
        });
    }
    nodes
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}

/// Boxes top to bottom in order; an arrow from each box read, straight from the box just
/// above, else around the right side (each such arrow on its own lane).
fn render(name: &str, nodes: &[Node]) -> String {
    const W: usize = 470;
    const H: usize = 46;
    const GAP: usize = 30;
    const X: usize = 40;
    let lanes = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.reads.iter().filter(move |&&r| r + 1 != i))
        .count();
    let width = X + W + 30 + 14 * lanes + 20;
    let top = 50;
    let height = top + nodes.len() * (H + GAP) + 10;
    let y = |i: usize| top + i * (H + GAP);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#555\"/></marker></defs>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{X}\" y=\"30\" font-size=\"18\" font-weight=\"bold\">{}</text>\n",
        esc(name)
    );
    let mut lane = 0;
    for (i, n) in nodes.iter().enumerate() {
        for &r in &n.reads {
            let (x0, y0, y1) = (X + W / 2, y(r) + H, y(i));
            if r + 1 == i {
                svg += &format!(
                    "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"#555\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>\n"
                );
            } else {
                lane += 1;
                let side = X + W + 14 * lane;
                let (ys, ye) = (y(r) + H / 2, y(i) + H / 2);
                svg += &format!(
                    "<path d=\"M {} {ys} H {side} V {ye} H {}\" fill=\"none\" stroke=\"#888\" stroke-width=\"1.2\" marker-end=\"url(#arrow)\"/>\n",
                    X + W,
                    X + W
                );
            }
        }
        let fill = match n.kind {
            Kind::Input => "#e8f0fe",
            Kind::Layer => "#f6f6f6",
            Kind::Output => "#e6f4ea",
        };
        svg += &format!(
            "<rect x=\"{X}\" y=\"{}\" width=\"{W}\" height=\"{H}\" rx=\"6\" fill=\"{fill}\" stroke=\"#444\"/>\n\
             <text x=\"{}\" y=\"{}\" font-size=\"13\" font-family=\"DejaVu Sans Mono, monospace\">{}</text>\n\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#555\">{}</text>\n",
            y(i),
            X + 10,
            y(i) + 19,
            esc(&clip(&n.title, 54)),
            X + 10,
            y(i) + 37,
            esc(&clip(&n.detail, 60)),
        );
    }
    svg += "</svg>\n";
    svg
}
