// E0114: the same error as tests/errors/unknown_type.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f16[B, 4]) -> f32[B, 4] {
        return x
    }
}

fn main() {}
