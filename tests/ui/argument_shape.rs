// E0206: the same error as tests/errors/argument_shape.nn, reported by `cargo build`.
nnc::model! {
    layer project(x: f32[B, 64]) -> f32[B, 8] {
        return dense(x, 8)
    }

    model M(x: f32[B, 32]) -> f32[B, 8] {
        return project(x)
    }
}

fn main() {}
