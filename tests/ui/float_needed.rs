// E0212: the same error as tests/errors/float_needed.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4], n: i32[B]) -> f32[B, 4] {
        e = exp(n)
        return x
    }
}

fn main() {}
