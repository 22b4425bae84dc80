// E0205: the same error as tests/errors/return_type.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 64]) -> f32[B, 10] {
        h = relu(dense(x, 128))
        return dense(h, 12)
    }
}

fn main() {}
