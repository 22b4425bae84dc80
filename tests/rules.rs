//! Learning rules beyond backprop, written in the prelude with grad blocks and
//! `stop_gradient`: each layer's gradients against an independent f64 computation of the
//! rule from its paper, and the cost of the step against backprop's (the same matrix
//! products).

mod common;

use std::collections::HashMap;

use nnc::ir::{DType, Func, Op};
use nnc::runtime::{Rng, Tensor};

fn model(layer: &str) -> String {
    format!(
        "model M(x: f32[B, 4]) -> f32[B, 2] {{
    h = relu({layer}(x, 3))
    return {layer}(h, 2)
}}

train M(y: f32[B, 2]) {{
    loss = mse(output, y)
    optimizer = sgd(lr = 0.1)
}}
"
    )
}

fn grad_func(src: &str) -> Func {
    let checked = nnc::lang::check(src).unwrap();
    let m = nnc::optimized_module(&checked.module, None).unwrap();
    m.func("M.grad").unwrap().clone()
}

/// Random f32-exact values for `g`'s parameters (buffers included), and them by name.
fn random_params(g: &Func, rng: &mut Rng) -> (Vec<Tensor>, HashMap<String, Vec<f64>>) {
    let mut by_name = HashMap::new();
    let params = g
        .params
        .iter()
        .map(|p| {
            let shape: Vec<usize> =
                p.ty.shape
                    .dims()
                    .iter()
                    .map(|d| d.known().unwrap() as usize)
                    .collect();
            let data: Vec<f64> = (0..shape.iter().product())
                .map(|_| (rng.normal() * 0.7) as f32 as f64)
                .collect();
            by_name.insert(p.name.clone(), data.clone());
            Tensor::new(DType::F32, shape, data)
        })
        .collect();
    (params, by_name)
}

/// The gradient function's outputs for the trained parameters named in `want` equal it.
fn assert_gradients(g: &Func, outs: &[Tensor], want: &[(String, Vec<f64>)], what: &str) {
    let trained: Vec<&str> = g
        .params
        .iter()
        .filter(|p| p.kind == nnc::ir::ParamKind::Param)
        .map(|p| p.name.as_str())
        .collect();
    let first = nnc::ir::Outputs {
        buffers: g.params.len() - trained.len(),
    }
    .gradients();
    for (name, w) in want {
        let k = trained.iter().position(|n| n == name).unwrap();
        let got = &outs[first + k].data;
        for (a, b) in got.iter().zip(w) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{what} d{name}: {got:?} vs {w:?}"
            );
        }
    }
}

/// How a rule sends the output layer's error back: from its weights and its feedback
/// buffer (if it has one), the [2, 3] matrix the error is multiplied by.
type Back = dyn Fn(&[f64], Option<&Vec<f64>>) -> Vec<f64>;

fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            c[i * m + j] = (0..k).map(|t| a[i * k + t] * b[t * m + j]).sum();
        }
    }
    c
}

fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    (0..c * r).map(|i| a[(i % r) * c + i / r]).collect()
}

/// The forward pass of `h = relu(x @ h.w + h.b)` then `h @ {out}.w + {out}.b` on 5 rows
/// of 4 features: `(a1, h, out)`.
fn forward(p: &HashMap<String, Vec<f64>>, x: &[f64], out: &str) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = 5;
    let a1: Vec<f64> = matmul(x, &p["h.w"], n, 4, 3)
        .iter()
        .enumerate()
        .map(|(i, v)| v + p["h.b"][i % 3])
        .collect();
    let h: Vec<f64> = a1.iter().map(|v| v.max(0.0)).collect();
    let (w, b) = (&p[&format!("{out}.w")], &p[&format!("{out}.b")]);
    let o: Vec<f64> = matmul(&h, w, n, 3, 2)
        .iter()
        .enumerate()
        .map(|(i, v)| v + b[i % 2])
        .collect();
    (a1, h, o)
}

/// The rule's gradients for `relu(L(x, 3))` then `L(h, 2)` under mse: the weights learn
/// from x^T dy as in backprop; the error reaches the hidden layer through `back(w2,
/// feedback2)` ([2, 3]) instead of w2^T.
fn reference(
    p: &HashMap<String, Vec<f64>>,
    x: &[f64],
    y: &[f64],
    back: &Back,
) -> Vec<(String, Vec<f64>)> {
    let n = 5;
    let (a1, h, out) = forward(p, x, "out");
    let dout: Vec<f64> = out
        .iter()
        .zip(y)
        .map(|(o, t)| 2.0 * (o - t) / (n * 2) as f64)
        .collect();
    let dw2 = matmul(&transpose(&h, n, 3), &dout, 3, n, 2);
    let db2: Vec<f64> = (0..2)
        .map(|j| (0..n).map(|i| dout[i * 2 + j]).sum())
        .collect();
    let b2 = back(&p["out.w"], p.get("out.feedback"));
    let dh = matmul(&dout, &b2, n, 2, 3);
    let da1: Vec<f64> = dh
        .iter()
        .zip(&a1)
        .map(|(d, a)| if *a > 0.0 { *d } else { 0.0 })
        .collect();
    let dw1 = matmul(&transpose(x, n, 4), &da1, 4, n, 3);
    let db1: Vec<f64> = (0..3)
        .map(|j| (0..n).map(|i| da1[i * 3 + j]).sum())
        .collect();
    vec![
        ("h.w".into(), dw1),
        ("h.b".into(), db1),
        ("out.w".into(), dw2),
        ("out.b".into(), db2),
    ]
}

fn check_rule(layer: &str, back: &Back) {
    let g = grad_func(&model(layer));
    let mut rng = Rng::stream(5, layer);
    let (params, by_name) = random_params(&g, &mut rng);
    let x: Vec<f64> = (0..20)
        .map(|_| (rng.uniform() * 2.0 - 1.0) as f32 as f64)
        .collect();
    let y: Vec<f64> = (0..10)
        .map(|_| (rng.uniform() * 2.0 - 1.0) as f32 as f64)
        .collect();
    let inputs = [
        Tensor::new(DType::F32, vec![5, 4], x.clone()),
        Tensor::new(DType::F32, vec![5, 2], y.clone()),
    ];
    let outs = nnc::compiler::interp::eval(&g, &inputs, &params).unwrap();
    let want = reference(&by_name, &x, &y, back);
    assert_gradients(&g, &outs, &want, layer);
}

/// Feedback alignment (Lillicrap et al., 2016): the hidden error is dy @ B, with B the
/// layer's fixed random `feedback` [units, I].
#[test]
fn feedback_alignment_sends_the_error_through_its_fixed_matrix() {
    check_rule("fa_dense", &|_w, feedback| feedback.unwrap().clone());
}

/// Sign symmetry (Liao, Leibo & Poggio, 2016): the hidden error is dy @ sign(w)^T.
#[test]
fn sign_symmetry_sends_the_error_through_the_signs_of_the_weights() {
    check_rule("sign_dense", &|w, _| {
        let s: Vec<f64> = w
            .iter()
            .map(|v| v.signum() * f64::from(u8::from(*v != 0.0)))
            .collect();
        transpose(&s, 3, 2)
    });
}

/// The rules' steps do the work backprop's does: as many matrix products, because the
/// simplifier folds `q - stop_gradient(q)` to 0 and q is never computed.
#[test]
fn the_rules_cost_what_backprop_costs() {
    let products = |f: &Func| f.nodes.iter().filter(|n| n.op == Op::MatMul).count();
    let dense = products(&grad_func(&model("dense")));
    for layer in ["fa_dense", "sign_dense"] {
        assert_eq!(products(&grad_func(&model(layer))), dense, "{layer}");
    }
}

/// The straight-through estimators: sign and round going forward, the identity's gradient
/// going back (Bengio et al., 2013).
#[test]
fn straight_through_estimators_pass_the_gradient_of_the_identity() {
    for (layer, f) in [
        ("ste_sign", (|v: f64| v.signum()) as fn(f64) -> f64),
        ("ste_round", |v: f64| v.round()),
    ] {
        let src = format!(
            "model M(x: f32[B, 3]) -> f32[B, 3] {{
    param w: f32[3] = normal(0.0, 2.0)
    return {layer}(x * w)
}}

train M(y: f32[B, 3]) {{
    loss = mse(output, y)
    optimizer = sgd(lr = 0.1)
}}
"
        );
        let g = grad_func(&src);
        let w = [1.3f32 as f64, -0.4f32 as f64, 2.6f32 as f64];
        let x: Vec<f64> = [0.5, -1.25, 0.75, 2.0, 0.3, -0.6]
            .iter()
            .map(|&v: &f64| v as f32 as f64)
            .collect();
        let y = [0.0, 1.0, -1.0, 2.0, 0.0, 1.0];
        let inputs = [
            Tensor::new(DType::F32, vec![2, 3], x.clone()),
            Tensor::new(DType::F32, vec![2, 3], y.to_vec()),
        ];
        let outs = nnc::compiler::interp::eval(
            &g,
            &inputs,
            &[Tensor::new(DType::F32, vec![3], w.to_vec())],
        )
        .unwrap();
        let out: Vec<f64> = (0..6).map(|i| f((x[i] * w[i % 3]) as f32 as f64)).collect();
        for (a, b) in outs[nnc::ir::Outputs::OUTPUT].data.iter().zip(&out) {
            assert_eq!(a, b, "{layer} forward");
        }
        // d mse / dw_j = sum_i 2 (out - y) / 6 * x_ij: the identity's derivative.
        let dw: Vec<f64> = (0..3)
            .map(|j| {
                (0..2)
                    .map(|i| 2.0 * (out[i * 3 + j] - y[i * 3 + j]) / 6.0 * x[i * 3 + j])
                    .sum()
            })
            .collect();
        let got = &outs[nnc::ir::Outputs { buffers: 0 }.gradients()].data;
        for (a, b) in got.iter().zip(&dw) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{layer}: {got:?} vs {dw:?}"
            );
        }
    }
}

/// Direct feedback alignment (Nokland, 2016): the hidden layer's error is the output's
/// error through the layer's own fixed matrix, e @ B, and nothing comes from the layer
/// above (it reads stop_gradient(h)).
#[test]
fn direct_feedback_alignment_sends_the_output_error_to_each_hidden_layer() {
    let src = "model M(x: f32[B, 4]) -> f32[B, 2] {
    h = relu(dense(x, 3))
    o = dense(stop_gradient(h), 2)
    return o + dfa_feedback(h, 2)
}

train M(y: f32[B, 2]) {
    loss = mse(output, y)
    optimizer = sgd(lr = 0.1)
}
";
    let g = grad_func(src);
    let mut rng = Rng::stream(11, "dfa");
    let (params, p) = random_params(&g, &mut rng);
    let x: Vec<f64> = (0..20)
        .map(|_| (rng.uniform() * 2.0 - 1.0) as f32 as f64)
        .collect();
    let y: Vec<f64> = (0..10)
        .map(|_| (rng.uniform() * 2.0 - 1.0) as f32 as f64)
        .collect();
    let inputs = [
        Tensor::new(DType::F32, vec![5, 4], x.clone()),
        Tensor::new(DType::F32, vec![5, 2], y.clone()),
    ];
    let outs = nnc::compiler::interp::eval(&g, &inputs, &params).unwrap();
    // The reference: out = o (the feedback term is 0), e = d mse / d out.
    let n = 5;
    let (a1, h, out) = forward(&p, &x, "o");
    let e: Vec<f64> = out
        .iter()
        .zip(&y)
        .map(|(o, t)| 2.0 * (o - t) / 10.0)
        .collect();
    let feedback = p.iter().find(|(k, _)| k.ends_with(".feedback")).unwrap().1;
    let dh = matmul(&e, feedback, n, 2, 3);
    let da1: Vec<f64> = dh
        .iter()
        .zip(&a1)
        .map(|(d, a)| if *a > 0.0 { *d } else { 0.0 })
        .collect();
    let want = [
        (
            "h.w".to_string(),
            matmul(&transpose(&x, n, 4), &da1, 4, n, 3),
        ),
        (
            "h.b".to_string(),
            (0..3)
                .map(|j| (0..n).map(|i| da1[i * 3 + j]).sum())
                .collect(),
        ),
        ("o.w".to_string(), matmul(&transpose(&h, n, 3), &e, 3, n, 2)),
        (
            "o.b".to_string(),
            (0..2).map(|j| (0..n).map(|i| e[i * 2 + j]).sum()).collect(),
        ),
    ];
    assert_gradients(&g, &outs, &want, "dfa");
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Forward-forward (Hinton, 2022) on two classes, so that the wrong label is the other
/// one: each layer's gradient is that of its own loss on its goodness (sum of squares),
/// softplus(2 - g) at the true label and softplus(g - 2) at the wrong one, with its input
/// normalized to unit length and held constant (nothing flows between layers).
#[test]
fn forward_forward_trains_each_layer_on_its_own_goodness() {
    let src = "model M(x: f32[B, 3]) -> f32[B, 2] {
    xs = ff_labels(x, 2)
    h1 = relu(dense(ff_normalize(xs), 3))
    h2 = relu(dense(ff_normalize(h1), 3))
    g1 = goodness(h1)
    g2 = goodness(h2)
    return g1 + g2
}

train M(y: i32[B]) {
    loss = ff_loss(g1, y) + ff_loss(g2, y)
    optimizer = sgd(lr = 0.1)
}
";
    let g = grad_func(src);
    let mut rng = Rng::stream(13, "ff");
    let (params, p) = random_params(&g, &mut rng);
    let n = 4;
    let x: Vec<f64> = (0..n * 3).map(|_| rng.uniform() as f32 as f64).collect();
    let y = [0.0, 1.0, 1.0, 0.0];
    let inputs = [
        Tensor::new(DType::F32, vec![n, 3], x.clone()),
        Tensor::new(DType::I32, vec![n], y.to_vec()),
        Tensor::new(DType::I32, vec![], vec![0.0]),
    ];
    let inputs = &inputs[..g.inputs.len()];
    let outs = nnc::compiler::interp::eval(&g, inputs, &params).unwrap();
    // Rows: (b, c) for image b with label c; the layer input u, [n * 2, d].
    let unit = |v: &[f64]| {
        let len = v.iter().map(|a| a * a).sum::<f64>().sqrt() + 1e-4;
        v.iter().map(|a| a / len).collect::<Vec<f64>>()
    };
    let mut u1 = Vec::new();
    for b in 0..n {
        for c in 0..2 {
            let mut row = x[b * 3..b * 3 + 3].to_vec();
            row.extend((0..2).map(|k| f64::from(u8::from(k == c))));
            u1.extend(unit(&row));
        }
    }
    // One layer: its gradients and its activities.
    let layer = |u: &[f64], d: usize, w: &[f64], bias: &[f64]| {
        let a: Vec<f64> = matmul(u, w, n * 2, d, 3)
            .iter()
            .enumerate()
            .map(|(i, v)| v + bias[i % 3])
            .collect();
        let h: Vec<f64> = a.iter().map(|v| v.max(0.0)).collect();
        let mut da = vec![0.0; n * 2 * 3];
        for (b, &label) in y.iter().enumerate() {
            for c in 0..2 {
                let r = b * 2 + c;
                let good: f64 = h[r * 3..r * 3 + 3].iter().map(|v| v * v).sum();
                // d/dg of the mean over images of the positive or negative term.
                let dg = if c as f64 == label {
                    -sigmoid(2.0 - good) / n as f64
                } else {
                    sigmoid(good - 2.0) / n as f64
                };
                for k in 0..3 {
                    let i = r * 3 + k;
                    da[i] = if a[i] > 0.0 { dg * 2.0 * h[i] } else { 0.0 };
                }
            }
        }
        let dw = matmul(&transpose(u, n * 2, d), &da, d, n * 2, 3);
        let db: Vec<f64> = (0..3)
            .map(|k| (0..n * 2).map(|r| da[r * 3 + k]).sum())
            .collect();
        (dw, db, h)
    };
    let (dw1, db1, h1) = layer(&u1, 5, &p["h1.w"], &p["h1.b"]);
    let u2: Vec<f64> = h1.chunks(3).flat_map(unit).collect();
    let (dw2, db2, _) = layer(&u2, 3, &p["h2.w"], &p["h2.b"]);
    let want = vec![
        ("h1.w".into(), dw1),
        ("h1.b".into(), db1),
        ("h2.w".into(), dw2),
        ("h2.b".into(), db2),
    ];
    assert_gradients(&g, &outs, &want, "forward-forward");
}

/// A spike's surrogate gradient is snnTorch's fast sigmoid, 1 / (1 + 25 |u|)^2, where the
/// step function's derivative is 0; through a leaky integrate-and-fire layer over 3 steps
/// (beta 0.9, threshold 1, reset by subtraction without gradient), against backprop
/// through time written out here.
#[test]
fn lif_trains_through_the_fast_sigmoid_surrogate() {
    let src = "model M(x: f32[B, 3, 2]) -> f32[B, 2] {
    return mean(lif(x, 2), axis = 1)
}

train M(y: f32[B, 2]) {
    loss = mse(output, y)
    optimizer = sgd(lr = 0.1)
}
";
    let g = grad_func(src);
    let mut rng = Rng::stream(17, "lif");
    let (mut params, mut p) = random_params(&g, &mut rng);
    // Weights large enough to spike, biases around the threshold.
    for (t, prm) in params.iter_mut().zip(&g.params) {
        for v in t.data.iter_mut() {
            *v = (*v * 2.0 + if prm.name.ends_with(".b") { 0.8 } else { 0.0 }) as f32 as f64;
        }
        p.insert(prm.name.clone(), t.data.clone());
    }
    let (n, steps) = (3, 3);
    let x: Vec<f64> = (0..n * steps * 2)
        .map(|_| (rng.uniform() * 2.0) as f32 as f64)
        .collect();
    let y: Vec<f64> = (0..n * 2).map(|_| rng.uniform() as f32 as f64).collect();
    let inputs = [
        Tensor::new(DType::F32, vec![n, steps, 2], x.clone()),
        Tensor::new(DType::F32, vec![n, 2], y.clone()),
    ];
    let outs = nnc::compiler::interp::eval(&g, &inputs, &params).unwrap();
    let (w, b) = (&p["out.current.w"], &p["out.current.b"]);
    let surrogate = |u: f64| 1.0 / ((1.0 + 25.0 * u.abs()) * (1.0 + 25.0 * u.abs()));
    let mut dw = vec![0.0; 4];
    let mut db = vec![0.0; 2];
    for i in 0..n {
        // Forward, keeping each step's membrane.
        let cur = |t: usize, k: usize| {
            b[k] + (0..2)
                .map(|f| x[(i * steps + t) * 2 + f] * w[f * 2 + k])
                .sum::<f64>()
        };
        let mut mem = [[0.0; 2]; 3];
        let mut spk = [[0.0; 2]; 3];
        for t in 0..steps {
            for k in 0..2 {
                let (m0, s0) = if t == 0 {
                    (0.0, 0.0)
                } else {
                    (mem[t - 1][k], spk[t - 1][k])
                };
                mem[t][k] = 0.9 * m0 + cur(t, k) - s0;
                spk[t][k] = f64::from(u8::from(mem[t][k] - 1.0 > 0.0));
            }
        }
        for k in 0..2 {
            let rate = (0..steps).map(|t| spk[t][k]).sum::<f64>() / steps as f64;
            let dout = 2.0 * (rate - y[i * 2 + k]) / (n * 2) as f64;
            // Backward in time: the membrane carries beta, the reset nothing.
            let mut dmem = 0.0;
            for t in (0..steps).rev() {
                dmem = dmem * 0.9 + dout / steps as f64 * surrogate(mem[t][k] - 1.0);
                db[k] += dmem;
                for f in 0..2 {
                    dw[f * 2 + k] += dmem * x[(i * steps + t) * 2 + f];
                }
            }
        }
    }
    let want = vec![("out.current.w".into(), dw), ("out.current.b".into(), db)];
    assert_gradients(&g, &outs, &want, "lif");
}
