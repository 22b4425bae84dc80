// E0117: the same error as tests/errors/missing_loss.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 2] {
        return dense(x, 2)
    }

    train M(y: i32[B]) {
        optimizer = adam(lr = 1e-3)
    }
}

fn main() {}
