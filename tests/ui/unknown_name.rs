// E0101: the same error as tests/errors/unknown_name.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 2] {
        hidden = relu(dense(x, 8))
        return dense(hiden, 2)
    }
}

fn main() {}
