// E0104: the same error as tests/errors/duplicate_parameter.nn, reported by `cargo build`.
nnc::model! {
    layer scale(x: f32[B, D], x: f32[B, D]) -> f32[B, D] {
        return x
    }
}

fn main() {}
