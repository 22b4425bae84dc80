// E0208: the same error as tests/errors/axis_out_of_range.nn, reported by `cargo build`.
nnc::model! {
    model M(x: f32[B, 4]) -> f32[B] {
        return sum(x, axis = 2)
    }
}

fn main() {}
