//! The loss and accuracy curves of a run as an SVG picture (plotters).

use plotters::prelude::*;

use crate::run::EpochRow;

/// Draws loss (left) and accuracy (right, classifiers only) against the epoch.
pub fn svg(title: &str, rows: &[EpochRow]) -> String {
    let mut buf = String::new();
    // Drawing into a string cannot fail for lack of space or files; a plotting error
    // leaves a picture with what was drawn so far, which is still worth writing.
    let _ = draw(&mut buf, title, rows);
    buf
}

type Series = Vec<(f64, f64)>;

fn series(rows: &[EpochRow], f: impl Fn(&EpochRow) -> Option<f64>) -> Series {
    rows.iter()
        .filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.epoch as f64, v)))
        .collect()
}

fn draw(
    buf: &mut String,
    title: &str,
    rows: &[EpochRow],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(buf, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&format!("{title}: training curves"), ("sans-serif", 20))?;
    let (left, right) = root.split_horizontally(480);
    let epochs = rows.last().map_or(1.0, |r| r.epoch as f64).max(1.0);
    let first = rows.first().map_or(1.0, |r| r.epoch as f64).min(epochs);
    let x_range = (first - 0.5)..(epochs + 0.5);

    let train_loss = series(rows, |r| Some(r.train_loss));
    let test_loss = series(rows, |r| r.test_loss);
    let top = train_loss
        .iter()
        .chain(&test_loss)
        .map(|p| p.1)
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.05;
    let mut chart = ChartBuilder::on(&left)
        .caption("loss", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(52)
        .build_cartesian_2d(x_range.clone(), 0.0..top)?;
    chart.configure_mesh().x_desc("epoch").draw()?;
    chart
        .draw_series(LineSeries::new(train_loss, &BLUE))?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    chart
        .draw_series(LineSeries::new(test_loss, &RED))?
        .label("test")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    chart.configure_series_labels().border_style(BLACK).draw()?;

    let train_acc = series(rows, |r| r.train_accuracy.map(|a| a * 100.0));
    let test_acc = series(rows, |r| r.test_accuracy.map(|a| a * 100.0));
    if train_acc.is_empty() && test_acc.is_empty() {
        return Ok(());
    }
    let mut chart = ChartBuilder::on(&right)
        .caption("accuracy (%)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(52)
        .build_cartesian_2d(x_range, 0.0..100.0)?;
    chart.configure_mesh().x_desc("epoch").draw()?;
    chart
        .draw_series(LineSeries::new(train_acc, &BLUE))?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    chart
        .draw_series(LineSeries::new(test_acc, &RED))?
        .label("test")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
