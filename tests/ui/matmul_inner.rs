// E0203: the same error as tests/errors/matmul_inner.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 784], w: f32[128, 10]) -> f32[B, 10] {
        return x @ w
    }
}

fn main() {}
