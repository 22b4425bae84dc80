// E0111: the same error as tests/errors/argument_twice.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 2] {
        return dense(x, 2, units = 3)
    }
}

fn main() {}
