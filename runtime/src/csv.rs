//! Reads numeric CSV files into tensors, with errors that name the row and column.

use crate::Error;

use nnc_ir::DType;

use crate::tensor::Tensor;

/// A numeric table read from CSV.
#[derive(Clone, Debug)]
pub struct Table {
    /// Column names (from the header, or `c0`, `c1`, ... without one).
    pub columns: Vec<String>,
    /// Rows of values.
    pub rows: Vec<Vec<f64>>,
    /// The 1-based line number of each row in the file.
    pub lines: Vec<usize>,
}

/// Parses CSV text. A first line that does not parse as numbers is the header. Every row
/// must have as many cells as the first; blank lines are skipped.
pub fn parse(text: &str) -> Result<Table, Error> {
    let mut lines = split_lines(text)
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .peekable();
    let Some(&(_, first)) = lines.peek() else {
        return Err(Error::Data("the file has no rows".into()));
    };
    let cells: Vec<&str> = first.split(',').map(str::trim).collect();
    let header = cells.iter().any(|c| c.parse::<f64>().is_err());
    let columns: Vec<String> = if header {
        lines.next();
        // Two columns of one name: `label = ...` would silently pick the first.
        for (i, c) in cells.iter().enumerate() {
            if let Some(j) = cells[..i].iter().position(|d| d == c) {
                return Err(Error::Data(format!(
                    "line 1: columns {} and {} are both named `{c}`",
                    j + 1,
                    i + 1
                )));
            }
        }
        cells.iter().map(|s| s.to_string()).collect()
    } else {
        (0..cells.len()).map(|i| format!("c{i}")).collect()
    };
    let mut rows = Vec::new();
    let mut numbers = Vec::new();
    for (ln, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != columns.len() {
            return Err(Error::Data(format!(
                "line {}: {} columns, expected {}",
                ln + 1,
                cells.len(),
                columns.len()
            )));
        }
        let mut row = Vec::with_capacity(cells.len());
        for (c, cell) in cells.iter().enumerate() {
            match cell.parse::<f64>() {
                // Too large for f32, digits that overflow f64 too (not a written `inf`).
                Ok(v)
                    if v.abs() > f32::MAX as f64
                        && !v.is_nan()
                        && !cell.to_ascii_lowercase().contains("inf") =>
                {
                    return Err(Error::Data(format!(
                        "line {}, column {} (`{}`): `{}` does not fit in f32 (at most {:e})",
                        ln + 1,
                        c + 1,
                        clip(&columns[c]),
                        clip(cell),
                        f32::MAX
                    )));
                }
                Ok(v) if v.is_finite() => row.push(v),
                _ => {
                    return Err(Error::Data(format!(
                        "line {}, column {} (`{}`): `{}` is not a number",
                        ln + 1,
                        c + 1,
                        clip(&columns[c]),
                        clip(cell)
                    )));
                }
            }
        }
        rows.push(row);
        numbers.push(ln + 1);
    }
    if rows.is_empty() {
        return Err(Error::Data("the file has a header but no rows".into()));
    }
    Ok(Table {
        columns,
        rows,
        lines: numbers,
    })
}

/// A cell or name as quoted in a message: at most 40 characters (a 1 GB cell is not
/// repeated back).
fn clip(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Lines ended by `\n`, `\r\n` or a lone `\r` (old Mac files).
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = match rest.as_bytes().get(end) {
            Some(b'\r') if rest.as_bytes().get(end + 1) == Some(&b'\n') => 2,
            Some(_) => 1,
            None => 0,
        };
        rest = &rest[end + skip..];
        Some(line)
    })
}

impl Table {
    /// The whole table as a `[rows, columns]` tensor.
    pub fn to_tensor(&self, dtype: DType) -> Tensor {
        let data = self.rows.iter().flatten().copied().collect();
        Tensor::new(dtype, vec![self.rows.len(), self.columns.len()], data)
    }
}
