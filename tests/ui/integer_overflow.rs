// E0218: the same error as tests/errors/integer_overflow.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 4] {
        return x * (9223372036854775807 + 1)
    }
}

fn main() {}
