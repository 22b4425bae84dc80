// E0113: the same error as tests/errors/misplaced_state.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B, 4] {
        state m = zeros
        return x
    }
}

fn main() {}
