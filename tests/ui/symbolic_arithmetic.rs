// E0213: the same error as tests/errors/symbolic_arithmetic.nn, reported by `cargo build`.
nnc::model! {
    layer widen(x: f32[B, D]) -> f32[B, D] {
        return dense(x, B * 2)
    }

    model M(x: f32[B, 4]) -> f32[B, 4] {
        return widen(x)
    }
}

fn main() {}
