// E0103: the same error as tests/errors/duplicate_definition.nn, reported by `cargo build`.
nnc::model! {
    layer block(x: f32[B, D]) -> f32[B, D] {
        return relu(x)
    }

    layer block(x: f32[B, D]) -> f32[B, D] {
        return tanh(x)
    }

    model M(x: f32[B, 4]) -> f32[B, 4] {
        return block(x)
    }
}

fn main() {}
