// E0209: the same error as tests/errors/reshape_count.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4, 4]) -> f32[B, 15] {
        return reshape(x, [B, 15])
    }
}

fn main() {}
