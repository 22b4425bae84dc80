// E0210: the same error as tests/errors/expected_tensor.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 2] {
        return dense(3, 2)
    }
}

fn main() {}
