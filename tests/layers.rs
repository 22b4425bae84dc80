//! The prelude's research layers against independent reimplementations of their published
//! definitions (PyTorch's equations and layouts), written here in plain f64 loops: conv2d
//! with stride and padding, max and average pooling, layer norm, GRU, LSTM, causal
//! multi-head attention, top-k mixture of experts, embedding, dropout. The nnc side runs
//! through the reference interpreter (f32 rounding), so the tolerance is f32's.

use std::collections::HashMap;

use nnc::ir::{DType, Func};
use nnc::runtime::{Rng, Tensor};

/// Checks `src`, evaluates function `func` on `inputs` with random parameters, and returns
/// its first output and the parameters by name.
fn run(src: &str, func: &str, inputs: &[Tensor]) -> (Tensor, HashMap<String, Vec<f64>>) {
    run_zeroing(src, func, inputs, &|_| false)
}

/// `run` with the parameters `zero` names set to zeros.
fn run_zeroing(
    src: &str,
    func: &str,
    inputs: &[Tensor],
    zero: &dyn Fn(&str) -> bool,
) -> (Tensor, HashMap<String, Vec<f64>>) {
    let checked = nnc::lang::check(src).unwrap_or_else(|d| {
        panic!("{}", nnc::render_plain("test", src, &d));
    });
    let f: &Func = checked.module.func(func).unwrap();
    let mut rng = Rng::stream(7, func);
    let mut by_name = HashMap::new();
    let params: Vec<Tensor> = f
        .params
        .iter()
        .map(|p| {
            let shape = sizes(&p.ty);
            let n = shape.iter().product();
            let data: Vec<f64> = (0..n)
                .map(|_| (rng.normal() * 0.5) as f32 as f64)
                .map(|v| if zero(&p.name) { 0.0 } else { v })
                .collect();
            by_name.insert(p.name.clone(), data.clone());
            Tensor::new(DType::F32, shape, data)
        })
        .collect();
    let out = nnc::compiler::interp::eval(f, inputs, &params).unwrap();
    (out.into_iter().next().unwrap(), by_name)
}

/// The sizes of a type whose dimensions are all known.
fn sizes(ty: &nnc::ir::TensorType) -> Vec<usize> {
    ty.shape
        .dims()
        .iter()
        .map(|d| d.known().unwrap() as usize)
        .collect()
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Rng::stream(seed, "input");
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| (rng.uniform() * 2.0 - 1.0) as f32 as f64)
        .collect();
    Tensor::new(DType::F32, shape.to_vec(), data)
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "element {i}: {g} vs {w}"
        );
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn gelu_exact_and_tanh_approximation() {
    let x = random(&[4, 25], 3);
    let x = Tensor::new(
        DType::F32,
        x.shape.clone(),
        x.data.iter().map(|v| 4.0 * v).collect(),
    );
    for (approximate, want) in [
        (
            "false",
            (|v: f64| 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2))) as fn(f64) -> f64,
        ),
        ("true", |v: f64| {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh())
        }),
    ] {
        let src = format!(
            "model M(x: f32[4, 25]) -> f32[4, 25] {{\n    return gelu(x, approximate = {approximate})\n}}\n"
        );
        let (out, _) = run(&src, "M", std::slice::from_ref(&x));
        // Tighter than `assert_close`: the two curves differ by up to 5e-4.
        for (&v, &g) in x.data.iter().zip(&out.data) {
            let w = want(v);
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "gelu({v}): {g} vs {w}"
            );
        }
    }
}

#[test]
fn conv2d_with_stride_and_padding() {
    let src = "model M(x: f32[2, 3, 7, 6]) -> f32[2, 4, 4, 3] {\n    return conv2d(x, 4, 3, stride = 2, padding = 1)\n}\n";
    let x = random(&[2, 3, 7, 6], 1);
    let (out, p) = run(src, "M", std::slice::from_ref(&x));
    let (w, b) = (&p["out.w"], &p["out.b"]);
    let mut want = Vec::new();
    for n in 0..2 {
        for o in 0..4 {
            for oy in 0..4 {
                for ox in 0..3 {
                    let mut acc = b[o];
                    for c in 0..3 {
                        for i in 0..3 {
                            for j in 0..3 {
                                let (iy, ix) = ((oy * 2 + i) as i64 - 1, (ox * 2 + j) as i64 - 1);
                                if (0..7).contains(&iy) && (0..6).contains(&ix) {
                                    let xv =
                                        x.data[((n * 3 + c) * 7 + iy as usize) * 6 + ix as usize];
                                    acc += w[((o * 3 + c) * 3 + i) * 3 + j] * xv;
                                }
                            }
                        }
                    }
                    want.push(acc);
                }
            }
        }
    }
    assert_close(&out.data, &want);
}

#[test]
fn max_and_average_pooling() {
    let x = random(&[2, 3, 7, 6], 2);
    let src = "model M(x: f32[2, 3, 7, 6]) -> f32[2, 3, 3, 3] {\n    return max_pool2d(x, 2)\n}\n";
    let (out, _) = run(src, "M", std::slice::from_ref(&x));
    let at = |p: usize, y: i64, xx: i64| -> Option<f64> {
        ((0..7).contains(&y) && (0..6).contains(&xx))
            .then(|| x.data[(p * 7 + y as usize) * 6 + xx as usize])
    };
    let mut want = Vec::new();
    for p in 0..6 {
        for oy in 0..3i64 {
            for ox in 0..3i64 {
                let vals = (0..2).flat_map(|i| (0..2).map(move |j| (i, j)));
                want.push(
                    vals.filter_map(|(i, j)| at(p, oy * 2 + i, ox * 2 + j))
                        .fold(f64::NEG_INFINITY, f64::max),
                );
            }
        }
    }
    assert_close(&out.data, &want);
    // 3x3 windows, stride 2, padding 1; padding counts as zeros (count_include_pad).
    let src = "model M(x: f32[2, 3, 7, 6]) -> f32[2, 3, 4, 3] {\n    return avg_pool2d(x, 3, stride = 2, padding = 1)\n}\n";
    let (out, _) = run(src, "M", std::slice::from_ref(&x));
    let mut want = Vec::new();
    for p in 0..6 {
        for oy in 0..4i64 {
            for ox in 0..3i64 {
                let mut s = 0.0;
                for i in 0..3 {
                    for j in 0..3 {
                        s += at(p, oy * 2 + i - 1, ox * 2 + j - 1).unwrap_or(0.0);
                    }
                }
                want.push(s / 9.0);
            }
        }
    }
    assert_close(&out.data, &want);
}

#[test]
fn layer_norm_normalizes_the_last_axis() {
    let src = "model M(x: f32[2, 3, 5]) -> f32[2, 3, 5] {\n    return layer_norm(x)\n}\n";
    let x = random(&[2, 3, 5], 3);
    let (out, p) = run(src, "M", std::slice::from_ref(&x));
    let (g, b) = (&p["out.gamma"], &p["out.beta"]);
    let mut want = Vec::new();
    for row in x.data.chunks(5) {
        let mean = row.iter().sum::<f64>() / 5.0;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
        for (k, v) in row.iter().enumerate() {
            want.push((v - mean) / (var + 1e-5).sqrt() * g[k] + b[k]);
        }
    }
    assert_close(&out.data, &want);
}

/// `x [T, F] row-major per batch` times `w [F, N]` plus `b [N]`, for one row.
fn affine(x: &[f64], w: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    (0..n)
        .map(|j| {
            b[j] + x
                .iter()
                .enumerate()
                .map(|(k, v)| v * w[k * n + j])
                .sum::<f64>()
        })
        .collect()
}

#[test]
fn gru_matches_pytorch_equations() {
    let (bsz, t, f, u) = (2, 4, 3, 5);
    let src =
        "model M(x: f32[2, 4, 3]) -> f32[2, 4, 5] {\n    return gru(x, 5, sequences = true)\n}\n";
    let x = random(&[bsz, t, f], 4);
    let (out, p) = run(src, "M", std::slice::from_ref(&x));
    let mut want = Vec::new();
    for b in 0..bsz {
        let mut h = vec![0.0; u];
        for s in 0..t {
            let xt = &x.data[(b * t + s) * f..(b * t + s + 1) * f];
            let gi = affine(xt, &p["out.wi"], &p["out.bi"], 3 * u);
            let gh = affine(&h, &p["out.wh"], &p["out.bh"], 3 * u);
            h = (0..u)
                .map(|j| {
                    let r = sigmoid(gi[j] + gh[j]);
                    let z = sigmoid(gi[u + j] + gh[u + j]);
                    let n = (gi[2 * u + j] + r * gh[2 * u + j]).tanh();
                    (1.0 - z) * n + z * h[j]
                })
                .collect();
            want.extend(&h);
        }
    }
    assert_close(&out.data, &want);
}

#[test]
fn lstm_matches_pytorch_equations() {
    let (bsz, t, f, u) = (2, 4, 3, 5);
    let src = "model M(x: f32[2, 4, 3]) -> f32[2, 5] {\n    return lstm(x, 5)\n}\n";
    let x = random(&[bsz, t, f], 5);
    let (out, p) = run(src, "M", std::slice::from_ref(&x));
    let mut want = Vec::new();
    for b in 0..bsz {
        let (mut h, mut c) = (vec![0.0; u], vec![0.0; u]);
        for s in 0..t {
            let xt = &x.data[(b * t + s) * f..(b * t + s + 1) * f];
            let gi = affine(xt, &p["out.wi"], &p["out.bi"], 4 * u);
            let gh = affine(&h, &p["out.wh"], &p["out.bh"], 4 * u);
            let a: Vec<f64> = gi.iter().zip(&gh).map(|(x, y)| x + y).collect();
            for j in 0..u {
                let (i, fg) = (sigmoid(a[j]), sigmoid(a[u + j]));
                let (g, o) = (a[2 * u + j].tanh(), sigmoid(a[3 * u + j]));
                c[j] = fg * c[j] + i * g;
                h[j] = o * c[j].tanh();
            }
        }
        want.extend(&h);
    }
    assert_close(&out.data, &want);
}

#[test]
fn causal_multi_head_attention() {
    let (bsz, t, d, heads) = (2, 4, 6, 2);
    let dh = d / heads;
    let src = "model M(x: f32[2, 4, 6]) -> f32[2, 4, 6] {\n    return multi_head_attention(x, 2, causal = true)\n}\n";
    let x = random(&[bsz, t, d], 6);
    let (out, p) = run(src, "M", std::slice::from_ref(&x));
    let proj = |name: &str, rows: &[f64]| -> Vec<f64> {
        rows.chunks(d)
            .flat_map(|r| {
                affine(
                    r,
                    &p[&format!("out.{name}.w")],
                    &p[&format!("out.{name}.b")],
                    d,
                )
            })
            .collect()
    };
    let mut want = Vec::new();
    for b in 0..bsz {
        let xb = &x.data[b * t * d..(b + 1) * t * d];
        let (q, k, v) = (proj("q", xb), proj("k", xb), proj("v", xb));
        let mut o = vec![0.0; t * d];
        for hd in 0..heads {
            for i in 0..t {
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..dh)
                            .map(|e| q[i * d + hd * dh + e] * k[j * d + hd * dh + e])
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                for (j, s) in scores.iter().enumerate() {
                    let a = (s - m).exp() / z;
                    for e in 0..dh {
                        o[i * d + hd * dh + e] += a * v[j * d + hd * dh + e];
                    }
                }
            }
        }
        want.extend(proj("out", &o));
    }
    assert_close(&out.data, &want);
}

/// PyTorch's top-k mixture: the k largest gate logits (torch.topk: the lower index wins a
/// tie), a softmax over them, the experts' outputs mixed by it.
fn moe_reference(x: &Tensor, p: &HashMap<String, Vec<f64>>, dims: [usize; 6]) -> Vec<f64> {
    let [bsz, i, e, hid, u, k] = dims;
    let mut want = Vec::new();
    for b in 0..bsz {
        let xb = &x.data[b * i..(b + 1) * i];
        let logits = affine(xb, &p["out.logits.w"], &p["out.logits.b"], e);
        let mut order: Vec<usize> = (0..e).collect();
        // A stable sort: equal logits keep the lower index first.
        order.sort_by(|&a, &c| logits[c].total_cmp(&logits[a]));
        let top = &order[..k];
        let z: f64 = top.iter().map(|&k| logits[k].exp()).sum();
        let mut y = vec![0.0; u];
        for &k in top {
            let g = logits[k].exp() / z;
            let w1 = &p["out.w1"][k * i * hid..(k + 1) * i * hid];
            let b1 = &p["out.b1"][k * hid..(k + 1) * hid];
            let h: Vec<f64> = affine(xb, w1, b1, hid).iter().map(|v| v.max(0.0)).collect();
            let w2 = &p["out.w2"][k * hid * u..(k + 1) * hid * u];
            let b2 = &p["out.b2"][k * u..(k + 1) * u];
            for (yj, v) in y.iter_mut().zip(affine(&h, w2, b2, u)) {
                *yj += g * v;
            }
        }
        want.extend(y);
    }
    want
}

#[test]
fn mixture_of_experts_uses_the_top_k_experts() {
    let src = "model M(x: f32[3, 4]) -> f32[3, 2] {\n    return moe(x, 4, 5, 2, top_k = 2)\n}\n";
    let x = random(&[3, 4], 7);
    let (out, p) = run(src, "M", std::slice::from_ref(&x));
    assert_close(&out.data, &moe_reference(&x, &p, [3, 4, 4, 5, 2, 2]));
}

/// A zero-initialized router gives every expert the same logit: exactly k experts still
/// run, the first k (as torch.topk), not all the tied ones.
#[test]
fn mixture_of_experts_keeps_exactly_k_experts_on_ties() {
    let src = "model M(x: f32[3, 4]) -> f32[3, 2] {\n    return moe(x, 5, 3, 2, top_k = 2)\n}\n";
    let x = random(&[3, 4], 8);
    let (out, by_name) = run_zeroing(src, "M", std::slice::from_ref(&x), &|n| {
        n.starts_with("out.logits")
    });
    assert_close(&out.data, &moe_reference(&x, &by_name, [3, 4, 5, 3, 2, 2]));
}

#[test]
fn embedding_picks_table_rows() {
    let src = "model M(ids: i32[2, 3]) -> f32[2, 3, 4] {\n    return embedding(ids, 5, 4)\n}\n";
    let ids = Tensor::new(DType::I32, vec![2, 3], vec![0.0, 4.0, 2.0, 2.0, 1.0, 3.0]);
    let (out, p) = run(src, "M", std::slice::from_ref(&ids));
    let table = &p["out.table"];
    let want: Vec<f64> = ids
        .data
        .iter()
        .flat_map(|&k| table[k as usize * 4..k as usize * 4 + 4].to_vec())
        .collect();
    assert_close(&out.data, &want);
}

#[test]
fn dropout_masks_in_training_and_is_the_identity_in_inference() {
    let src = "model M(x: f32[B, 1000]) -> f32[B, 1000] {\n    return dropout(x, 0.25)\n}\n\
               train M(y: f32[B, 1000]) {\n    loss = mse(output, y)\n    optimizer = sgd\n}\n";
    let checked = nnc::lang::check(src).unwrap();
    let ones = Tensor::new(DType::F32, vec![2, 1000], vec![1.0; 2000]);
    // Inference: the forward pass and the evaluation loss do not draw noise.
    let fwd = nnc::compiler::interp::eval(
        checked.module.func("M").unwrap(),
        std::slice::from_ref(&ones),
        &[],
    )
    .unwrap();
    assert_eq!(fwd[0].data, ones.data);
    let eval = checked
        .module
        .func("M.eval")
        .expect("a model reading `training` has @M.eval");
    assert!(eval.nodes.iter().all(|n| n.op != nnc::ir::Op::Random));
    // Training: about a quarter zeroed, the rest scaled by 1 / (1 - p); another key,
    // another mask; the same key, the same mask.
    let loss = checked.module.func("M.loss").unwrap();
    let key = |k: f64| Tensor::new(DType::I32, vec![], vec![k]);
    let out = |k: f64| {
        nnc::compiler::interp::eval(loss, &[ones.clone(), ones.clone(), key(k)], &[]).unwrap()[1]
            .data
            .clone()
    };
    let a = out(1.0);
    let zeros = a.iter().filter(|&&v| v == 0.0).count();
    assert!((400..600).contains(&zeros), "{zeros} of 2000 dropped");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    assert_ne!(a, out(2.0));
    assert_eq!(a, out(1.0));
}

#[test]
fn batch_norm_uses_batch_statistics_in_training_and_running_ones_in_inference() {
    let src = "model M(x: f32[B, 3]) -> f32[B, 3] {\n    return batch_norm(x)\n}\n\
               train M(y: f32[B, 3]) {\n    loss = mse(output, y)\n    optimizer = sgd\n}\n";
    let checked = nnc::lang::check(src).unwrap();
    let x = random(&[5, 3], 8);
    let (gamma, beta) = (vec![1.5, 0.5, -1.0], vec![0.1, 0.2, 0.3]);
    let (rmean, rvar) = (vec![0.2, -0.1, 0.0], vec![0.5, 2.0, 1.0]);
    let params: Vec<Tensor> = [&gamma, &beta, &rmean, &rvar]
        .iter()
        .map(|v| Tensor::new(DType::F32, vec![3], v.to_vec()))
        .collect();
    let loss = checked.module.func("M.loss").unwrap();
    let outs = nnc::compiler::interp::eval(loss, &[x.clone(), x.clone()], &params).unwrap();
    // Outputs: loss, output, new running mean, new running variance.
    assert_eq!(outs.len(), 4);
    let (mut want, mut new_mean, mut new_var) = (vec![0.0; 15], vec![], vec![]);
    for c in 0..3 {
        let col: Vec<f64> = (0..5).map(|r| x.data[r * 3 + c]).collect();
        let mean = col.iter().sum::<f64>() / 5.0;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
        for r in 0..5 {
            want[r * 3 + c] = (col[r] - mean) / (var + 1e-5).sqrt() * gamma[c] + beta[c];
        }
        // PyTorch: momentum 0.1, the running variance takes the unbiased estimate.
        new_mean.push(0.9 * rmean[c] + 0.1 * mean);
        new_var.push(0.9 * rvar[c] + 0.1 * var * 5.0 / 4.0);
    }
    assert_close(&outs[1].data, &want);
    assert_close(&outs[2].data, &new_mean);
    assert_close(&outs[3].data, &new_var);
    // Inference: the running statistics normalize, and nothing is updated.
    let fwd = checked.module.func("M").unwrap();
    let out = nnc::compiler::interp::eval(fwd, std::slice::from_ref(&x), &params).unwrap();
    let want: Vec<f64> = (0..15)
        .map(|i| {
            let c = i % 3;
            (x.data[i] - rmean[c]) / (rvar[c] + 1e-5).sqrt() * gamma[c] + beta[c]
        })
        .collect();
    assert_close(&out[0].data, &want);
    assert_eq!(checked.module.func("M.eval").unwrap().outputs.len(), 2);
}

/// Every prelude layer's gradient (autodiff through the primitives it is written in)
/// against f64 central differences, on a small model with an MSE loss.
#[test]
fn every_prelude_layer_passes_gradcheck() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "x: f32[2, 2, 5, 5]",
            "conv2d(x, 3, 3, stride = 2, padding = 1)",
            "f32[2, 3, 3, 3]",
        ),
        (
            "x: f32[2, 2, 6, 6]",
            "max_pool2d(conv2d(x, 3, 3), 2)",
            "f32[2, 3, 2, 2]",
        ),
        (
            "x: f32[2, 2, 6, 6]",
            "avg_pool2d(conv2d(x, 3, 3), 3, stride = 2, padding = 1)",
            "f32[2, 3, 2, 2]",
        ),
        ("x: f32[4, 3]", "batch_norm(dense(x, 5))", "f32[4, 5]"),
        (
            "x: f32[3, 2, 4, 4]",
            "batch_norm2d(conv2d(x, 3, 3))",
            "f32[3, 3, 2, 2]",
        ),
        ("x: f32[2, 3, 4]", "layer_norm(dense(x, 5))", "f32[2, 3, 5]"),
        ("x: f32[4, 6]", "dropout(dense(x, 8), 0.3)", "f32[4, 8]"),
        ("ids: i32[2, 3]", "embedding(ids, 5, 4)", "f32[2, 3, 4]"),
        (
            "x: f32[2, 3, 4]",
            "gru(x, 5, sequences = true)",
            "f32[2, 3, 5]",
        ),
        ("x: f32[2, 3, 4]", "lstm(x, 5)", "f32[2, 5]"),
        (
            "x: f32[2, 4, 6]",
            "multi_head_attention(x, 2, causal = true)",
            "f32[2, 4, 6]",
        ),
        (
            "x: f32[2, 3, 4]",
            "transformer_block(x, 2, 8)",
            "f32[2, 3, 4]",
        ),
        ("x: f32[3, 4]", "glu(x, 5)", "f32[3, 5]"),
        ("x: f32[3, 4]", "swiglu(x, 5)", "f32[3, 5]"),
        ("x: f32[3, 4]", "moe(x, 4, 5, 2, top_k = 2)", "f32[3, 2]"),
    ];
    for (input, body, out) in cases {
        let src = format!(
            "model M({input}) -> {out} {{\n    return {body}\n}}\n\
             train M(y: {out}) {{\n    loss = mse(output, y)\n    optimizer = sgd\n}}\n"
        );
        let checked = nnc::lang::check(&src)
            .unwrap_or_else(|d| panic!("{}", nnc::render_plain("case", &src, &d)));
        let loss = checked.module.func("M.loss").unwrap();
        let mut rng = Rng::stream(3, body);
        let inputs: Vec<Tensor> = loss
            .inputs
            .iter()
            .map(|a| {
                let shape = sizes(&a.ty);
                let n = shape.iter().product();
                let data = match (a.name.as_str(), a.ty.dtype) {
                    (_, DType::I32) => (0..n).map(|i| ((i * 3 + 1) % 5) as f64).collect(),
                    _ => (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect(),
                };
                Tensor::new(a.ty.dtype, shape, data)
            })
            .collect();
        let params: Vec<Tensor> = loss
            .params
            .iter()
            .map(|p| {
                let shape = sizes(&p.ty);
                let n = shape.iter().product();
                // Weights around zero; buffers (running variances) positive.
                let data = if p.kind == nnc::ir::ParamKind::Buffer {
                    (0..n).map(|_| rng.uniform() * 0.8 + 0.2).collect()
                } else {
                    (0..n).map(|_| rng.uniform() - 0.5).collect()
                };
                Tensor::new(DType::F32, shape, data)
            })
            .collect();
        let reports = nnc::compiler::gradcheck::check(
            loss,
            &inputs,
            &params,
            &nnc::compiler::gradcheck::Options::default(),
        )
        .unwrap();
        assert!(!reports.is_empty(), "{body}: no parameters checked");
        for r in reports {
            assert!(
                r.worst < 1e-5,
                "{body}: {} off by {} ({} vs {})",
                r.name,
                r.worst,
                r.analytic,
                r.numeric
            );
        }
    }
}
