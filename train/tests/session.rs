//! The training loop's extras against direct computations: global-norm clipping, annealed
//! gradient noise, and schedules as the learning rate each step sees.

use nnc_compiler::interp::eval;
use nnc_ir::DType;
use nnc_runtime::Tensor;
use nnc_runtime::data::Dataset;
use nnc_train::{Model, Schedule, Session, TrainConfig};

const SRC: &str = "model Lin(x: f32[B, 8]) -> f32[B, 64] { return dense(x, 64) }\n\
                   train Lin(y: f32[B, 64]) {\n    loss = mse(output, y)\n    optimizer = sgd(lr = 0.5)\n    batch = 16\n}\n";

fn setup(tweak: impl Fn(&mut TrainConfig)) -> (Session, Dataset) {
    let checked = nnc_lang::check(SRC).unwrap();
    let spec = &checked.trains[0];
    let model = Model::new(&checked.module, "Lin", Some(spec)).unwrap();
    let mut config = TrainConfig::from_spec(spec, std::path::Path::new("."));
    tweak(&mut config);
    let n = 16;
    let x: Vec<f64> = (0..n * 8)
        .map(|i| ((i * 37 % 11) as f64 - 5.0) / 5.0)
        .collect();
    let y: Vec<f64> = (0..n * 64)
        .map(|i| ((i * 13 % 7) as f64 - 3.0) / 3.0)
        .collect();
    let ds = Dataset {
        x: Tensor::new(DType::F32, vec![n, 8], x),
        y: Some(Tensor::new(DType::F32, vec![n, 64], y)),
        origin: (0..n).map(|i| format!("row {i}")).collect(),
        source: "the test's rows".into(),
        label_file: None,
    };
    (Session::new(model, config).unwrap(), ds)
}

/// The gradients at the session's current parameters over the whole (one-batch) data set.
fn grads(s: &Session, ds: &Dataset) -> Vec<Tensor> {
    let g = s.model.grad.as_ref().unwrap();
    let outs = eval(g, &[ds.x.clone(), ds.y.clone().unwrap()], &s.params).unwrap();
    outs[2..].to_vec()
}

fn one_step(s: &mut Session, ds: &Dataset) {
    s.train_epoch(ds, &mut |_| {}).unwrap();
}

#[test]
fn clipping_scales_the_update_to_the_global_norm() {
    let (mut s, ds) = setup(|c| c.clip = Some(0.05));
    let before = s.params.clone();
    let g = grads(&s, &ds);
    let norm = g
        .iter()
        .flat_map(|t| &t.data)
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt();
    assert!(
        norm > 0.05,
        "the test needs a gradient larger than the bound, got {norm}"
    );
    one_step(&mut s, &ds);
    let coef = 0.05 / (norm + 1e-6);
    for ((w0, w1), g) in before.iter().zip(&s.params).zip(&g) {
        for i in 0..w0.len() {
            let want = w0.data[i] - 0.5 * g.data[i] * coef;
            assert!((w1.data[i] - want).abs() < 1e-6, "{} vs {want}", w1.data[i]);
        }
    }
    // Without clipping the step is the plain gradient step, far larger.
    let (mut free, _) = setup(|_| {});
    one_step(&mut free, &ds);
    let moved = |s: &Session| {
        s.params
            .iter()
            .zip(&before)
            .flat_map(|(a, b)| a.data.iter().zip(&b.data))
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
    };
    let ratio = moved(&free) / moved(&s);
    assert!(
        (ratio * coef - 1.0).abs() < 1e-3,
        "ratio {ratio}, norm {norm}"
    );
}

#[test]
fn gradient_noise_has_the_annealed_scale_and_is_seeded() {
    let eta = 0.01;
    let (mut noisy, ds) = setup(|c| c.grad_noise = Some(eta));
    let (mut clean, _) = setup(|_| {});
    one_step(&mut noisy, &ds);
    one_step(&mut clean, &ds);
    // w_noisy - w_clean = -lr * noise, noise ~ N(0, eta / (1 + 0)^0.55) at the first step.
    let diffs: Vec<f64> = noisy
        .params
        .iter()
        .zip(&clean.params)
        .flat_map(|(a, b)| {
            a.data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| (x - y) / -0.5)
                .collect::<Vec<_>>()
        })
        .collect();
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let std = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(diffs.len() > 500);
    assert!(mean.abs() < 0.01, "noise mean {mean}");
    assert!(
        (std / eta.sqrt() - 1.0).abs() < 0.08,
        "noise std {std}, expected {}",
        eta.sqrt()
    );
    // The same seed draws the same noise.
    let (mut again, _) = setup(|c| c.grad_noise = Some(eta));
    one_step(&mut again, &ds);
    assert_eq!(again.params, noisy.params);
}

#[test]
fn the_schedule_sets_each_steps_learning_rate() {
    let (mut s, ds) = setup(|c| {
        c.schedule = Schedule::Cosine {
            warmup: 2,
            min_lr: 0.0,
        };
        c.epochs = 5;
    });
    let mut lrs = Vec::new();
    for _ in 0..5 {
        s.train_epoch(&ds, &mut |r| lrs.push(r.lr)).unwrap();
    }
    // One step per epoch, 5 in all: warmup 0.25, 0.5, then cosine from 0.5 to 0.
    let want = [0.25, 0.5, 0.5, 0.25, 0.0];
    for (a, b) in lrs.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{lrs:?}");
    }
}
