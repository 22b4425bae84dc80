// E0219: the same error as tests/errors/symbolic_parameter.nn, reported by `cargo build`.
nnc::model! {
    layer per_example(x: f32[B, D]) -> f32[B, D] {
        param s: f32[B, D] = ones
        return x * s
    }

    model M(x: f32[B, 4]) -> f32[B, 4] {
        return per_example(x)
    }
}

fn main() {}
