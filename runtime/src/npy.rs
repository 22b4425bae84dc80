//! Reads and writes NumPy `.npy` files (format versions 1 to 3, C order, little-endian
//! numbers). The format is a magic string, a Python-literal header dict and raw data; it is
//! small enough that owning the parser gives errors that say exactly what is wrong.

use crate::Error;

use nnc_ir::DType;

use crate::tensor::Tensor;

const MAGIC: &[u8] = b"\x93NUMPY";

/// An array read from a `.npy` file: its shape and its values as f64, and whether its
/// element type was an integer one.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Sizes of each axis.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f64>,
    /// True for integer and boolean element types.
    pub integer: bool,
}

/// Parses the bytes of a `.npy` file.
pub fn read(bytes: &[u8]) -> Result<Array, Error> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(Error::Data(
            "not a .npy file (the magic string \\x93NUMPY is missing)".into(),
        ));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(Error::Data(format!("unsupported .npy format version {v}"))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| Error::Data("the .npy header is truncated".into()))?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| Error::Data("the .npy header is not text".into()))?;
    let descr = dict_value(header, "descr")
        .ok_or_else(|| Error::Data("the .npy header has no `descr`".into()))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order")
        .ok_or_else(|| Error::Data("the .npy header has no `fortran_order`".into()))?;
    if fortran.trim() != "False" {
        return Err(Error::Data(
            "Fortran-order .npy arrays are not supported; save with C order".into(),
        ));
    }
    let shape_text = dict_value(header, "shape")
        .ok_or_else(|| Error::Data("the .npy header has no `shape`".into()))?;
    let shape: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| Error::Data(format!("bad .npy shape `{shape_text}`")))
        })
        .collect::<Result<_, _>>()?;
    let (kind, size) = elem(descr)?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::Data("the .npy shape is too large".into()))?;
    let body = &bytes[end..];
    if body.len() != n * size {
        return Err(Error::Data(format!(
            "the .npy data holds {} bytes, but shape {shape:?} of `{descr}` needs {}",
            body.len(),
            n * size
        )));
    }
    let data: Vec<f64> = body
        .chunks_exact(size)
        .map(|c| match (kind, size) {
            ('f', 4) => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            ('f', 8) => f64::from_le_bytes(c.try_into().unwrap()),
            ('i', 1) => c[0] as i8 as f64,
            ('i', 2) => i16::from_le_bytes(c.try_into().unwrap()) as f64,
            ('i', 4) => i32::from_le_bytes(c.try_into().unwrap()) as f64,
            ('i', 8) => i64::from_le_bytes(c.try_into().unwrap()) as f64,
            ('u' | 'b', 1) => c[0] as f64,
            ('u', 2) => u16::from_le_bytes(c.try_into().unwrap()) as f64,
            ('u', 4) => u32::from_le_bytes(c.try_into().unwrap()) as f64,
            _ => u64::from_le_bytes(c.try_into().unwrap()) as f64,
        })
        .collect();
    if kind == 'f' {
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Data(format!(
                "element {i} of the .npy array is not finite"
            )));
        }
    }
    Ok(Array {
        shape,
        data,
        integer: kind != 'f',
    })
}

/// The element kind and byte size of a `descr` such as `<f4`.
fn elem(descr: &str) -> Result<(char, usize), Error> {
    let bad = || {
        Error::Data(format!(
            "unsupported .npy element type `{descr}` (use float32/64 or integers)"
        ))
    };
    let mut chars = descr.chars();
    let order = chars.next().ok_or_else(bad)?;
    let kind = chars.next().ok_or_else(bad)?;
    let size: usize = chars.as_str().parse().map_err(|_| bad())?;
    let ok = match kind {
        'f' => matches!(size, 4 | 8),
        'i' | 'u' => matches!(size, 1 | 2 | 4 | 8),
        'b' => size == 1,
        _ => false,
    };
    if !ok || order == '>' {
        return Err(bad());
    }
    Ok((kind, size))
}

/// The text of a key's value in the header's Python dict literal.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Serializes a tensor as a version-1 `.npy` file (`<f4`, `<f8` or `<i4`).
pub fn write(t: &Tensor) -> Vec<u8> {
    let descr = match t.dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::I32 => "<i4",
    };
    let shape = match t.shape.len() {
        1 => format!("({},)", t.shape[0]),
        _ => format!(
            "({})",
            t.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so the data starts on a 64-byte boundary, ending the header with a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &v in &t.data {
        match t.dtype {
            DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            DType::F64 => out.extend_from_slice(&v.to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (dtype, shape) in [
            (DType::F32, vec![2, 3]),
            (DType::F64, vec![4]),
            (DType::I32, vec![]),
        ] {
            let n = shape.iter().product();
            let t = Tensor::new(
                dtype,
                shape.clone(),
                (0..n).map(|i| i as f64 - 1.5).collect(),
            );
            let a = read(&write(&t)).unwrap();
            assert_eq!(a.shape, shape);
            assert_eq!(a.data, t.data);
            assert_eq!(a.integer, dtype == DType::I32);
        }
    }

    #[test]
    fn bad_files_are_errors() {
        let good = write(&Tensor::new(DType::F32, vec![3], vec![1.0, 2.0, 3.0]));
        assert!(read(b"hello").unwrap_err().to_string().contains("magic"));
        assert!(
            read(&good[..good.len() - 2])
                .unwrap_err()
                .to_string()
                .contains("needs 12")
        );
        assert!(
            read(&good[..20])
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let at = good.windows(5).position(|w| w == b"False").unwrap();
        let mut fortran = good.clone();
        fortran[at..at + 5].copy_from_slice(b"True ");
        assert!(read(&fortran).unwrap_err().to_string().contains("Fortran"));
    }
}
