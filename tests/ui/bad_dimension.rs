// E0216: the same error as tests/errors/bad_dimension.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 0]) -> f32[B, 2] {
        return dense(x, 2)
    }
}

fn main() {}
