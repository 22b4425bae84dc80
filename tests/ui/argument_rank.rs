// E0207: the same error as tests/errors/argument_rank.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4, 4]) -> f32[B, 2] {
        return conv2d(x, 2, 3)
    }
}

fn main() {}
