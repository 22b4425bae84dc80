// E0124: a grad block in a model, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 4] {
        y = 2.0 * x
        grad (dy) {
            x.grad = 2.0 * dy
        }
        return y
    }
}

fn main() {}
