// E0227: a grad block that leaves out an adjoint, reported by `cargo build`.
nnc::model! {
    layer lin(x: f32[B, I], units: int) {
        param w: f32[I, units] = fan_in_uniform
        grad (dy) {
            w.grad = transpose(x) @ dy
        }
        return x @ w
    }

    model M(x: f32[B, 4]) -> f32[B, 3] {
        return lin(x, 3)
    }
}

fn main() {}
