// E0107: the same error as tests/errors/after_return.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 2] {
        return dense(x, 2)
        h = relu(x)
    }
}

fn main() {}
