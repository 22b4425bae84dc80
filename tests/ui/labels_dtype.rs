// E0214: the same error as tests/errors/labels_dtype.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4], y: f32[B]) -> f32[B, 3] {
        return dense(x, 3) * one_hot(y, 3)
    }
}

fn main() {}
