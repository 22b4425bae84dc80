// E0122: the same error as tests/errors/duplicate_setting.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 2] {
        return dense(x, 2)
    }

    train M(y: i32[B]) {
        loss = cross_entropy(output, y)
        optimizer = sgd(lr = 0.1)
        batch = 32
        batch = 64
    }
}

fn main() {}
