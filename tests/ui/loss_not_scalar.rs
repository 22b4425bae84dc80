// E0211: the same error as tests/errors/loss_not_scalar.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 1] {
        return dense(x, 1)
    }

    train M(t: f32[B, 1]) {
        loss = (output - t) * (output - t)
        optimizer = sgd(lr = 0.1)
    }
}

fn main() {}
