// E0217: the same error as tests/errors/division_by_zero.nn, reported by `cargo build`.
nnc::model! {
    layer half(x: f32[B, D]) -> f32[B, D] {
        return dense(x, D / 0)
    }

    model M(x: f32[B, 4]) -> f32[B, 4] {
        return half(x)
    }
}

fn main() {}
