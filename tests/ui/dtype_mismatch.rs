// E0201: the same error as tests/errors/dtype_mismatch.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4], n: i32[B, 4]) -> f32[B, 4] {
        return x + n
    }
}

fn main() {}
