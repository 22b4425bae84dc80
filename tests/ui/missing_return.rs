// E0106: the same error as tests/errors/missing_return.nn, reported by `cargo build`.
nnc::model! {
    layer block(x: f32[B, D]) -> f32[B, D] {
        h = relu(x)
    }
}

fn main() {}
