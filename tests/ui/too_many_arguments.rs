// E0110: the same error as tests/errors/too_many_arguments.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 4] {
        return relu(x, 0.1)
    }
}

fn main() {}
