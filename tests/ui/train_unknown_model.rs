// E0115: the same error as tests/errors/train_unknown_model.nn, reported by `cargo build`.
nnc::model! {
    model Mlp(x: f32[B, 4]) -> f32[B, 2] {
        return dense(x, 2)
    }

    train Mpl(y: i32[B]) {
        loss = cross_entropy(output, y)
        optimizer = sgd(lr = 0.1)
    }
}

fn main() {}
