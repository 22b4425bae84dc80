// E0215: the same error as tests/errors/dimension_binding.nn, reported by `cargo build`.
nnc::model! {
    layer combine(a: f32[B, D], b: f32[B, D]) -> f32[B, D] {
        return a * b
    }

    model M(x: f32[B, 4], y: f32[B, 6]) -> f32[B, 4] {
        return combine(x, y)
    }
}

fn main() {}
