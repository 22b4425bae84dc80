// E0109: the same error as tests/errors/unknown_keyword.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 2] {
        return dense(x, units = 2, bias_init = 0.0)
    }
}

fn main() {}
