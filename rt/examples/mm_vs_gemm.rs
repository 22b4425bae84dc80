//! Times nnc's packed kernel against gemm on one thread for the products of a training
//! step (the shapes of mlp784 and LeNet-5 and a recurrent layer's), each operand layout;
//! and the kernel's AVX2 tile on the same core (whose 256-bit peak is half its 512-bit one).
//!
//!     cargo run --release -p nnc-rt --example mm_vs_gemm
use nnc_rt::mm::{self, Epilogue, Strided};
use std::time::Instant;

/// The best time per call of `f` and of `g`, run in turns (so a drift of the shared
/// machine reaches both alike).
fn best<F: FnMut(), G: FnMut()>(mut f: F, mut g: G, reps: usize) -> (f64, f64) {
    f();
    g();
    let (mut bf, mut bg) = (f64::MAX, f64::MAX);
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        bf = bf.min(t.elapsed().as_secs_f64() / reps as f64);
        let t = Instant::now();
        for _ in 0..reps {
            g();
        }
        bg = bg.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    (bf, bg)
}

fn main() {
    if !mm::available() {
        eprintln!("no AVX-512 or AVX2 here");
        return;
    }
    let shapes = [
        (128, 784, 256, false, false),
        (128, 256, 256, false, false),
        (128, 256, 256, false, true),
        (256, 128, 256, true, false),
        (784, 128, 256, true, false),
        (128, 256, 10, false, false),
        (64, 150, 16, false, false),
        (1024, 25, 6, false, false),
        (32, 64, 256, false, false),
        (32, 256, 1024, false, false),
        (512, 512, 512, false, false),
        (64, 8192, 256, true, false),
        (16, 8192, 256, true, false),
        (8192, 16, 256, false, false),
        (32, 64, 256, false, true),
    ];
    println!(
        "| m x k x n | a^T | b^T | gemm GFLOP/s | nnc GFLOP/s | nnc/gemm | nnc AVX2 tile GFLOP/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (m, k, n, ta, tb) in shapes {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let mut c2 = c.clone();
        let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
        let (b_rs, b_cs) = if tb { (1, k) } else { (n, 1) };
        let reps = (2e8 / (2.0 * (m * k * n) as f64)).max(1.0) as usize;
        let sa = Strided {
            ptr: a.as_ptr(),
            rs: a_rs,
            cs: a_cs,
        };
        let sb = Strided {
            ptr: b.as_ptr(),
            rs: b_rs,
            cs: b_cs,
        };
        let (g, o) = best(
            || unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    a_cs as isize,
                    a_rs as isize,
                    b.as_ptr(),
                    b_cs as isize,
                    b_rs as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            },
            || unsafe { mm::matmul(sa, sb, c2.as_mut_ptr(), m, k, n, &Epilogue::NONE) },
            reps,
        );
        // The AVX2 tile on this core, against the AVX-512 tile in the same turns.
        let mut c3 = c2.clone();
        let (o2, w) = mm::with_avx2_tile(|| {
            best(
                || unsafe { mm::matmul(sa, sb, c3.as_mut_ptr(), m, k, n, &Epilogue::NONE) },
                || {},
                reps,
            )
        });
        let _ = w;
        let fl = 2.0 * (m * k * n) as f64 / 1e9;
        println!(
            "| {m}x{k}x{n} | {ta} | {tb} | {:.0} | {:.0} | {:.2} | {:.0} |",
            fl / g,
            fl / o,
            g / o,
            fl / o2
        );
    }
}
