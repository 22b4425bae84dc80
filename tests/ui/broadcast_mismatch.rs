// E0202: the same error as tests/errors/broadcast_mismatch.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 64], y: f32[B, 128]) -> f32[B, 64] {
        return x + y
    }
}

fn main() {}
