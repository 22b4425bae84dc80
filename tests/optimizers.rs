//! Each optimizer rule of the prelude against an independent implementation of its
//! published update (PyTorch's conventions where they differ), for two steps on a tiny
//! parameter, exactly (in f64, to the last few ulps).

use nnc::compiler::interp::eval;
use nnc::ir::DType;
use nnc::runtime::Tensor;

const W0: [f64; 3] = [0.5, -1.5, 2.0];
const GRADS: [[f64; 3]; 2] = [[0.1, -0.2, 0.3], [-0.4, 0.05, 0.2]];
const LR: f64 = 0.1;

/// Runs a rule's `@M.update` for the two gradients, in f64.
fn run_rule(optimizer: &str) -> Vec<[f64; 3]> {
    let src = format!(
        "model M(x: f32[B, 2]) -> f32[B, 1] {{ return dense(x, 1) }}\n\
         train M(y: f32[B, 1]) {{\n    loss = mse(output, y)\n    optimizer = {optimizer}\n}}\n"
    );
    let checked = nnc::lang::check(&src).unwrap_or_else(|d| panic!("{optimizer}: {d:?}"));
    let update = checked
        .module
        .func("M.update")
        .unwrap()
        .with_float_type(DType::F64);
    let vec = |v: &[f64]| Tensor::new(DType::F64, vec![v.len()], v.to_vec());
    let mut states: Vec<Tensor> = update
        .params
        .iter()
        .map(|p| match p.init {
            nnc::ir::Init::Zeros => vec(&[0.0; 3]),
            ref other => panic!("unexpected state init {other:?}"),
        })
        .collect();
    let mut w = vec(&W0);
    let mut out = Vec::new();
    for (t, g) in GRADS.iter().enumerate() {
        let inputs = [
            w.clone(),
            vec(g),
            Tensor::scalar(DType::F64, LR),
            Tensor::scalar(DType::F64, (t + 1) as f64),
        ];
        let mut r = eval(&update, &inputs, &states).unwrap().into_iter();
        w = r.next().unwrap();
        states = r.collect();
        out.push([w.data[0], w.data[1], w.data[2]]);
    }
    out
}

/// Runs a reference: `step(t, w, g, state)` per element, state starting at zeros.
fn reference<const S: usize>(step: impl Fn(f64, f64, f64, &mut [f64; S]) -> f64) -> Vec<[f64; 3]> {
    let mut w = W0;
    let mut st = [[0.0; S]; 3];
    let mut out = Vec::new();
    for (t, g) in GRADS.iter().enumerate() {
        for i in 0..3 {
            w[i] = step((t + 1) as f64, w[i], g[i], &mut st[i]);
        }
        out.push(w);
    }
    out
}

fn assert_close(name: &str, got: Vec<[f64; 3]>, want: Vec<[f64; 3]>) {
    for (t, (a, b)) in got.iter().zip(&want).enumerate() {
        for i in 0..3 {
            let err = (a[i] - b[i]).abs() / b[i].abs().max(1e-300);
            assert!(
                err < 1e-14,
                "{name}, step {}: w[{i}] = {} by nnc, {} by the reference",
                t + 1,
                a[i],
                b[i]
            );
        }
    }
    // The update must have moved the parameter.
    assert!(got[1] != W0, "{name} did not change w");
}

#[test]
fn sgd() {
    let wd = 0.01;
    assert_close(
        "sgd",
        run_rule("sgd(lr = 0.1, wd = 0.01)"),
        reference::<0>(|_, w, g, _| w - LR * (g + wd * w)),
    );
}

#[test]
fn momentum() {
    let (mu, wd) = (0.9, 0.01);
    assert_close(
        "momentum",
        run_rule("momentum(lr = 0.1, mu = 0.9, wd = 0.01)"),
        reference::<1>(|_, w, g, s| {
            // torch.optim.SGD(momentum=mu): buf = mu * buf + d (buf = d on the first step).
            let d = g + wd * w;
            s[0] = mu * s[0] + d;
            w - LR * s[0]
        }),
    );
}

#[test]
fn nesterov() {
    let (mu, wd) = (0.9, 0.01);
    assert_close(
        "nesterov",
        run_rule("nesterov(lr = 0.1, mu = 0.9, wd = 0.01)"),
        reference::<1>(|_, w, g, s| {
            let d = g + wd * w;
            s[0] = mu * s[0] + d;
            w - LR * (d + mu * s[0])
        }),
    );
}

fn adam_ref(t: f64, w: f64, d: f64, s: &mut [f64; 2], b1: f64, b2: f64, eps: f64) -> f64 {
    s[0] = b1 * s[0] + (1.0 - b1) * d;
    s[1] = b2 * s[1] + (1.0 - b2) * d * d;
    let mhat = s[0] / (1.0 - b1.powf(t));
    let vhat = s[1] / (1.0 - b2.powf(t));
    w - LR * mhat / (vhat.sqrt() + eps)
}

#[test]
fn adam() {
    let wd = 0.01;
    assert_close(
        "adam",
        run_rule("adam(lr = 0.1, beta1 = 0.8, beta2 = 0.99, eps = 1e-6, wd = 0.01)"),
        reference::<2>(|t, w, g, s| adam_ref(t, w, g + wd * w, s, 0.8, 0.99, 1e-6)),
    );
}

#[test]
fn adamw() {
    let wd = 0.05;
    assert_close(
        "adamw",
        run_rule("adamw(lr = 0.1, wd = 0.05)"),
        reference::<2>(|t, w, g, s| {
            // torch.optim.AdamW: w *= 1 - lr * wd, then the Adam step on the raw gradient.
            let decayed = w * (1.0 - LR * wd);
            adam_ref(t, decayed, g, s, 0.9, 0.999, 1e-8)
        }),
    );
}

#[test]
fn lion() {
    let (b1, b2, wd) = (0.9, 0.99, 0.1);
    assert_close(
        "lion",
        run_rule("lion(lr = 0.1, wd = 0.1)"),
        reference::<1>(|_, w, g, s| {
            // Chen et al. 2023, Algorithm 2.
            let c = b1 * s[0] + (1.0 - b1) * g;
            let w = w - LR * (c.signum() * (c != 0.0) as u8 as f64 + wd * w);
            s[0] = b2 * s[0] + (1.0 - b2) * g;
            w
        }),
    );
}

#[test]
fn rmsprop() {
    let (alpha, eps, wd) = (0.9, 1e-8, 0.01);
    assert_close(
        "rmsprop",
        run_rule("rmsprop(lr = 0.1, alpha = 0.9, wd = 0.01)"),
        reference::<1>(|_, w, g, s| {
            let d = g + wd * w;
            s[0] = alpha * s[0] + (1.0 - alpha) * d * d;
            w - LR * d / (s[0].sqrt() + eps)
        }),
    );
}

/// The first Adam step moves every coordinate by lr (times the sign), whatever the
/// gradient's scale: a value worth pinning by hand.
#[test]
fn adam_first_step_by_hand() {
    let got = run_rule("adam(lr = 0.1, eps = 0.0)");
    for (a, b) in got[0].iter().zip([0.4, -1.4, 1.9]) {
        assert!((a - b).abs() < 1e-15, "{:?}", got[0]);
    }
}

/// Every rule on the JIT's fused step (one update pass over all parameters, in place
/// where the kernel allows it) against the interpreter applying it per parameter: five
/// steps on a model whose parameters do not fill whole vectors (the loop's scalar tail).
#[test]
fn every_rule_updates_alike_on_the_jit_and_the_interpreter() {
    use nnc::train::{Backend, Model, Session, TrainConfig};
    for rule in [
        "sgd(wd = 0.1)",
        "momentum",
        "nesterov",
        "adam",
        "adamw",
        "lion",
        "rmsprop",
    ] {
        let src = format!(
            "model M(x: f32[B, 3]) -> f32[B, 2] {{ return dense(relu(dense(x, 5)), 2) }}\n\
             train M(y: f32[B, 2]) {{\n    loss = mse(output, y)\n    optimizer = {rule}\n}}\n"
        );
        let checked = nnc::lang::check(&src).unwrap();
        let spec = &checked.trains[0];
        let model = Model::new(&checked.module, "M", Some(spec)).unwrap();
        let x = Tensor::new(
            DType::F32,
            vec![4, 3],
            (0..12).map(|i| (i as f64 - 5.0) / 7.0).collect(),
        );
        let y = Tensor::new(
            DType::F32,
            vec![4, 2],
            (0..8).map(|i| (i % 3) as f64 - 1.0).collect(),
        );
        let params = |backend| {
            let mut config = TrainConfig::from_spec(spec, std::path::Path::new("."));
            config.backend = backend;
            let mut s = Session::new(model.clone(), config).unwrap();
            for _ in 0..5 {
                s.train_step(&[x.clone(), y.clone()], 1).unwrap();
            }
            (s.params.clone(), s.current_states())
        };
        // Every prelude rule compiles to one pass that may update in place.
        let dims = std::collections::HashMap::from([("N".to_string(), 37)]);
        let kernel = nnc_jit::compile(model.update.as_ref().unwrap(), &dims).unwrap();
        assert!(kernel.in_place_safe(), "{rule}");
        let (pi, si) = params(Backend::Interp);
        let mut natives = vec![params(Backend::Jit)];
        if cfg!(feature = "llvm") {
            natives.push(params(Backend::Llvm));
        }
        let flat = |ts: &[Tensor]| ts.iter().flat_map(|t| t.data.clone()).collect::<Vec<f64>>();
        let states = |ss: &[Vec<Tensor>]| ss.iter().flat_map(|s| flat(s)).collect::<Vec<f64>>();
        for (what, a, b) in natives.iter().flat_map(|(pj, sj)| {
            [
                ("parameters", flat(pj), flat(&pi)),
                ("states", states(sj), states(&si)),
            ]
        }) {
            assert_eq!(a.len(), b.len(), "{rule} {what}");
            for (u, v) in a.iter().zip(&b) {
                assert!(
                    (u - v).abs() <= 1e-5 + 1e-4 * v.abs(),
                    "{rule} {what}: jit {u}, interpreter {v}"
                );
            }
        }
    }
}

/// A rule whose update is not one elementwise pass (`pow` of a tensor calls a kernel)
/// is not run in place.
#[test]
fn a_rule_with_a_kernel_call_does_not_update_in_place() {
    let src = "rule powered(lr = 0.1) for (w, g) {\n    w = w - lr * abs(g) ^ 1.5\n}\n\
               model M(x: f32[B, 3]) -> f32[B, 2] { return dense(x, 2) }\n\
               train M(y: f32[B, 2]) {\n    loss = mse(output, y)\n    optimizer = powered\n}\n";
    let checked = nnc::lang::check(src).unwrap();
    let update = checked.module.func("M.update").unwrap();
    let dims = std::collections::HashMap::from([("N".to_string(), 37)]);
    assert!(!nnc_jit::compile(update, &dims).unwrap().in_place_safe());
}
