//! A Rust program that runs a model compiled ahead of time by `nnc build`: it links the
//! object file and this crate (nnc's run-time kernels) and nothing else of nnc: no
//! compiler, no JIT, no checkpoint reading (the weights are inside the object).
//!
//! ```sh
//! cargo run --release -- train examples/digits_mlp.nn --out runs/digits
//! cargo run --release -- build examples/digits_mlp.nn \
//!     --checkpoint runs/digits/checkpoint.safetensors -o runs/digits/aot
//! cargo rustc --release -p nnc-rt --example deploy --features example-model -- \
//!     -C link-arg=runs/digits/aot/digits_mlp.o
//! target/release/examples/deploy examples/data/digits.csv
//! ```
//!
//! It reads rows of a CSV (header first; the `label` column is skipped; features scaled
//! by 1/16 as the train block declares), and prints each row's class and the model's
//! outputs, as `nnc predict` does. (The `example-model` feature keeps this example out of
//! workspace builds, which have no model object to link.)

use std::io::Write;

const FEATURES: usize = 64;
const CLASSES: usize = 10;

unsafe extern "C" {
    /// Declared in `digits_mlp.h`; 0 on success.
    fn digits_mlp_forward(x: *const f32, y: *mut f32, batch: usize) -> i32;
}

fn main() {
    // Keep every kernel in the link, whatever order the linker reads the object in.
    std::hint::black_box(nnc_rt::kernels());
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: deploy ROWS.csv");
        std::process::exit(2)
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(2)
    });
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let label = header.iter().position(|&h| h == "label");
    let mut x: Vec<f32> = Vec::new();
    for (i, line) in lines.enumerate() {
        let before = x.len();
        for (c, v) in line.split(',').enumerate() {
            if Some(c) == label {
                continue;
            }
            match v.trim().parse::<f32>() {
                Ok(v) => x.push(v / 16.0),
                Err(_) => {
                    eprintln!("{path}: row {}: `{v}` is not a number", i + 1);
                    std::process::exit(2)
                }
            }
        }
        if x.len() - before != FEATURES {
            eprintln!(
                "{path}: row {} has {} features, not {FEATURES}",
                i + 1,
                x.len() - before
            );
            std::process::exit(2)
        }
    }
    let rows = x.len() / FEATURES;
    let mut y = vec![0.0f32; rows * CLASSES];
    // The buffers hold `rows` rows of the header's sizes.
    let rc = unsafe { digits_mlp_forward(x.as_ptr(), y.as_mut_ptr(), rows) };
    if rc != 0 {
        eprintln!("forward failed with code {rc}");
        std::process::exit(1)
    }
    let mut out = std::io::stdout().lock();
    for row in y.chunks(CLASSES) {
        let best = (0..CLASSES).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        let _ = write!(out, "{best}");
        for v in row {
            let _ = write!(out, ",{v}");
        }
        let _ = writeln!(out);
    }
}
