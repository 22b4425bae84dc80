// E0112: the same error as tests/errors/missing_argument.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 2] {
        return dense(x)
    }
}

fn main() {}
