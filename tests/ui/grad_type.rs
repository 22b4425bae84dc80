// E0226: the same error as tests/errors/grad_type.nn, reported by `cargo build`.
nnc::model! {
    layer lin(x: f32[B, I], units: int) {
        param w: f32[I, units] = fan_in_uniform
        grad (dy) {
            x.grad = dy @ transpose(w)
            w.grad = dy @ transpose(w)
        }
        return x @ w
    }

    model M(x: f32[B, 4]) -> f32[B, 3] {
        return lin(x, 3)
    }
}

fn main() {}
