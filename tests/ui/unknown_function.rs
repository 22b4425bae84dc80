// E0102: the same error as tests/errors/unknown_function.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 2] {
        return dense(rleu(x), 2)
    }
}

fn main() {}
