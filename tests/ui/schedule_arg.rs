// E0220: the same error as tests/errors/schedule_arg.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 2] {
        return dense(x, 2)
    }

    train M(y: i32[B]) {
        loss      = cross_entropy(output, y)
        optimizer = sgd(lr = 0.1)
        schedule  = step(every = 0.5, gamma = 0.1)
    }
}

fn main() {}
