//! Trains the digits MLP through the `model!` macro and prints its test accuracy.
//!
//!     cargo run --release --example digits_macro
//!
//! The model, its training rules and its data are written in nnc's language inside Rust;
//! a shape mistake in them is a `cargo build` error on the offending tokens.

nnc::model! {
    model DigitsMlp(x: f32[B, 64]) -> f32[B, 10] {
        h1 = relu(dense(x, 128))
        return dense(h1, 10)
    }

    train DigitsMlp(y: i32[B]) {
        loss      = cross_entropy(output, y)
        optimizer = adam(lr = 1e-3)
        batch     = 32
        epochs    = 30
        data      = csv("examples/data/digits.csv", label = "label", scale = 0.0625, test_tail = 360)
    }
}

fn main() -> nnc::Result<()> {
    let mut model = DigitsMlp::new(0);
    let (train, test) = model.data()?;
    let test = test.expect("the train block holds out the last 360 rows");
    let epochs = model.fit(&train, 30)?;
    let last = epochs.last().expect("30 epochs");
    let held = model.evaluate(&test)?;
    println!(
        "DigitsMlp via model!: train loss {:.4}, test loss {:.4}, test accuracy {:.2}%",
        last.loss,
        held.loss,
        held.accuracy.unwrap_or(0.0) * 100.0
    );
    println!("first-layer weights h1.w: {:?}", model.h1_w().shape);
    Ok(())
}
