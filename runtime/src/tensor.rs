//! A plain host tensor: shape, element type and row-major data.
//!
//! Values are held as f64 whatever the element type; an f32 tensor holds only values that
//! are exactly representable in f32 (the interpreter rounds after every op), and an i32
//! tensor only integers. This keeps the reference interpreter to one code path.

use nnc_ir::{DType, TensorType};

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Element type.
    pub dtype: DType,
    /// Sizes of each axis.
    pub shape: Vec<usize>,
    /// Elements, row-major, `shape.iter().product()` of them.
    pub data: Vec<f64>,
}

impl Tensor {
    /// A tensor from parts; panics if the data length does not match the shape (a bug in
    /// the caller, never user input).
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} does not match {} elements",
            data.len()
        );
        let mut t = Tensor { dtype, shape, data };
        t.round();
        t
    }

    /// A tensor filled with one value.
    pub fn full(dtype: DType, shape: Vec<usize>, value: f64) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(dtype, shape, vec![value; n])
    }

    /// A scalar.
    pub fn scalar(dtype: DType, value: f64) -> Tensor {
        Tensor::new(dtype, Vec::new(), vec![value])
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Rounds the data to what the element type can hold.
    pub fn round(&mut self) {
        match self.dtype {
            DType::F32 => self.data.iter_mut().for_each(|x| *x = *x as f32 as f64),
            DType::I32 => self.data.iter_mut().for_each(|x| *x = (*x as i32) as f64),
            DType::F64 => {}
        }
    }

    /// Whether this tensor has the given type, with symbolic dimensions matching anything.
    pub fn matches(&self, ty: &TensorType) -> bool {
        self.dtype == ty.dtype
            && self.shape.len() == ty.rank()
            && self
                .shape
                .iter()
                .zip(ty.shape.dims())
                .all(|(&n, d)| d.known().is_none_or(|k| k as usize == n))
    }

    /// The type, with known sizes.
    pub fn ty(&self) -> TensorType {
        TensorType::new(
            self.dtype,
            nnc_ir::Shape::known(&self.shape.iter().map(|&n| n as u64).collect::<Vec<_>>()),
        )
    }
}

impl std::fmt::Display for Tensor {
    /// Prints the type and the elements, row by row for matrices.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.ty())?;
        let row = self.shape.last().copied().unwrap_or(1).max(1);
        for chunk in self.data.chunks(row) {
            let items: Vec<String> = chunk.iter().map(|v| format!("{v}")).collect();
            writeln!(f, "{}", items.join(", "))?;
        }
        Ok(())
    }
}
