// E0105: the same error as tests/errors/recursion.nn, reported by `cargo build`.
nnc::model! {
    layer ping(x: f32[B, D]) -> f32[B, D] {
        return pong(x)
    }

    layer pong(x: f32[B, D]) -> f32[B, D] {
        return ping(relu(x))
    }
}

fn main() {}
