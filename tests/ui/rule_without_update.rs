// E0123: the same error as tests/errors/rule_without_update.nn, reported by `cargo build`.
nnc::model! {
    rule frozen(lr = 0.1) for (w, g) {
        state m = zeros
        m = 0.9 * m + g
    }
}

fn main() {}
