//! Data sets for training: features and labels read from CSV or NPY files, split into a
//! training and a held-out part, fitted to a model's input types, and cut into batches.

use crate::Error;

use std::path::{Path, PathBuf};

use nnc_ir::{DType, TensorType};

use crate::npy;
use crate::tensor::Tensor;

/// Where rows come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A CSV file with a header; the `label` column (if any) is the label, the others are
    /// features in file order.
    Csv {
        /// The file.
        path: PathBuf,
        /// The label column's name.
        label: Option<String>,
    },
    /// `.npy` files: features `[N, ...]` and optional labels `[N]` or `[N, k]`.
    Npy {
        /// The features file.
        x: PathBuf,
        /// The labels file.
        y: Option<PathBuf>,
    },
    /// A text file as a byte-level language-modelling set: row `i` is the `window` bytes
    /// from `i * window` (ids 0..=255), its labels the bytes one further on (the next
    /// byte at each position). Windows do not overlap; a held-out tail is the text's end.
    Text {
        /// The file.
        path: PathBuf,
        /// Bytes per row.
        window: usize,
    },
}

/// How the rows split into training and held-out rows (no shuffling before the split).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Split {
    /// Every row trains.
    None,
    /// The last `n` rows are held out.
    Tail(usize),
    /// The last `round(f * N)` rows are held out.
    Fraction(f64),
}

/// A data source with its preprocessing and split.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSpec {
    /// The files.
    pub source: Source,
    /// Features are multiplied by this.
    pub scale: f64,
    /// The held-out part.
    pub split: Split,
    /// Per-feature normalization, fitted on the training rows.
    pub normalize: Normalize,
}

/// How features are normalized after the scale, with statistics of the training rows only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Normalize {
    /// As read.
    #[default]
    None,
    /// Zero mean, unit standard deviation (the population's, as scikit-learn's
    /// `StandardScaler`); a constant feature is only centered.
    Standardize,
    /// Into [0, 1] by the minimum and maximum; a constant feature becomes 0.
    MinMax,
}

/// Per-feature statistics: each feature `x[.., j]` becomes `(x - shift[j]) * mult[j]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureStats {
    /// Which normalization they are for.
    pub kind: Normalize,
    /// Subtracted.
    pub shift: Vec<f64>,
    /// Then multiplied by.
    pub mult: Vec<f64>,
}

impl FeatureStats {
    /// The metadata keys they are kept under in checkpoints.
    pub const KEYS: [&'static str; 3] = ["data.normalize", "data.shift", "data.mult"];

    /// Fits `kind` to the rows of `x` (`[N, F...]`, features flattened), in f64.
    pub fn fit(kind: Normalize, x: &Tensor) -> Result<FeatureStats, Error> {
        let n = x.shape.first().copied().unwrap_or(0);
        if n == 0 {
            return Err(Error::Data(
                "no training rows to fit the feature statistics on".into(),
            ));
        }
        let f = x.len() / n;
        let col = |j: usize| (0..n).map(move |i| x.data[i * f + j]);
        let (mut shift, mut mult) = (Vec::with_capacity(f), Vec::with_capacity(f));
        for j in 0..f {
            let (s, spread) = match kind {
                Normalize::None => (0.0, 1.0),
                Normalize::Standardize => {
                    let mean = col(j).sum::<f64>() / n as f64;
                    let var = col(j).map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
                    (mean, var.sqrt())
                }
                Normalize::MinMax => {
                    let lo = col(j).fold(f64::INFINITY, f64::min);
                    let hi = col(j).fold(f64::NEG_INFINITY, f64::max);
                    (lo, hi - lo)
                }
            };
            shift.push(s);
            mult.push(if spread > 0.0 { 1.0 / spread } else { 1.0 });
        }
        Ok(FeatureStats { kind, shift, mult })
    }

    /// Normalizes `x`'s features in place.
    pub fn apply(&self, x: &mut Tensor) -> Result<(), Error> {
        let n = x.shape.first().copied().unwrap_or(0).max(1);
        let f = x.len() / n;
        if f != self.shift.len() {
            return Err(Error::Data(format!(
                "the feature statistics are for {} features, but the rows have {f}",
                self.shift.len()
            )));
        }
        for (i, v) in x.data.iter_mut().enumerate() {
            let j = i % f;
            *v = (*v - self.shift[j]) * self.mult[j];
        }
        Ok(())
    }

    /// As checkpoint metadata (f64 values written so they read back exactly).
    pub fn to_meta(&self) -> Vec<(String, String)> {
        let list = |v: &[f64]| {
            let items: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
            format!("[{}]", items.join(","))
        };
        let kind = match self.kind {
            Normalize::None => "none",
            Normalize::Standardize => "standardize",
            Normalize::MinMax => "min_max",
        };
        vec![
            (Self::KEYS[0].into(), kind.into()),
            (Self::KEYS[1].into(), list(&self.shift)),
            (Self::KEYS[2].into(), list(&self.mult)),
        ]
    }

    /// From checkpoint metadata: `None` if there are none.
    pub fn from_meta(
        meta: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<FeatureStats>, Error> {
        let Some(kind) = meta.get(Self::KEYS[0]) else {
            return Ok(None);
        };
        let kind = match kind.as_str() {
            "none" => Normalize::None,
            "standardize" => Normalize::Standardize,
            "min_max" => Normalize::MinMax,
            k => {
                return Err(Error::Data(format!(
                    "the checkpoint's feature normalization `{k}` is unknown"
                )));
            }
        };
        let list = |key: &str| -> Result<Vec<f64>, Error> {
            let text = meta.get(key).map(String::as_str).unwrap_or("");
            let inner = text
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .ok_or_else(|| Error::Data(format!("the checkpoint's `{key}` is not a list")))?;
            inner
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| Error::Data(format!("the checkpoint's `{key}` holds `{s}`")))
                })
                .collect()
        };
        let (shift, mult) = (list(Self::KEYS[1])?, list(Self::KEYS[2])?);
        if shift.len() != mult.len() {
            return Err(Error::Data(
                "the checkpoint's feature statistics disagree in length".into(),
            ));
        }
        Ok(Some(FeatureStats { kind, shift, mult }))
    }
}

/// Rows of features and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Features, `[N, ...]`.
    pub x: Tensor,
    /// Labels, `[N]` or `[N, k]`.
    pub y: Option<Tensor>,
    /// Where each row came from, for error messages (`line 12 of digits.csv`).
    pub origin: Vec<String>,
    /// The files, for errors about the whole set (`` `digits.csv` ``).
    pub source: String,
    /// The labels' own file, when they have one (NPY): label errors name its rows.
    pub label_file: Option<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Io(format!("cannot read data file `{}`: {e}", path.display())))
}

/// Loads a data source (paths are used as given).
pub fn load(spec: &DataSpec) -> Result<Dataset, Error> {
    let mut ds = match &spec.source {
        Source::Csv { path, label } => load_csv(path, label.as_deref())?,
        Source::Npy { x, y } => load_npy(x, y.as_deref())?,
        Source::Text { path, window } => load_text(path, *window)?,
    };
    if spec.scale != 1.0 {
        ds.x.data.iter_mut().for_each(|v| *v *= spec.scale);
    }
    // Features are f32: a value that overflows it (read, or once scaled) is an error, not
    // an infinity that trains to `loss inf`.
    let per = ds.x.shape[1..].iter().product::<usize>().max(1);
    if let Some(i) = ds.x.data.iter().position(|v| v.abs() > f32::MAX as f64) {
        let v = ds.x.data[i];
        let scaled = if spec.scale != 1.0 {
            format!(" (after scale = {})", spec.scale)
        } else {
            String::new()
        };
        return Err(Error::Data(format!(
            "{}: feature {} is {v:e}{scaled}, which does not fit in f32",
            ds.origin[i / per],
            i % per + 1
        )));
    }
    ds.x.round();
    Ok(ds)
}

fn load_csv(path: &Path, label: Option<&str>) -> Result<Dataset, Error> {
    let bytes = read(path)?;
    let file = path.display();
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Error::Data(format!(
            "`{file}` is not UTF-8 text (bad byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let table = crate::csv::parse(text).map_err(|e| Error::Data(format!("`{file}`: {e}")))?;
    let label_col = match label {
        None => None,
        Some(name) => match table.columns.iter().position(|c| c == name) {
            Some(i) => Some(i),
            None => {
                let shown: Vec<&str> = table.columns.iter().take(8).map(String::as_str).collect();
                let more = if table.columns.len() > 8 { ", ..." } else { "" };
                return Err(Error::Data(format!(
                    "`{file}` has no column `{name}` (its columns: {}{more})",
                    shown.join(", ")
                )));
            }
        },
    };
    let n = table.rows.len();
    let features = table.columns.len() - label_col.is_some() as usize;
    let mut x = Vec::with_capacity(n * features);
    let mut y = Vec::with_capacity(n);
    for row in &table.rows {
        for (c, &v) in row.iter().enumerate() {
            if Some(c) == label_col {
                y.push(v);
            } else {
                x.push(v);
            }
        }
    }
    Ok(Dataset {
        x: Tensor::new(DType::F32, vec![n, features], x),
        y: label_col.map(|_| Tensor::new(DType::F64, vec![n], y)),
        origin: table
            .lines
            .iter()
            .map(|l| format!("line {l} of `{file}`"))
            .collect(),
        source: format!("`{file}`"),
        label_file: None,
    })
}

fn load_text(path: &Path, window: usize) -> Result<Dataset, Error> {
    let bytes = read(path)?;
    let file = path.display();
    if window == 0 {
        return Err(Error::Data(format!(
            "`{file}`: text windows must hold at least one byte (window = 0)"
        )));
    }
    // Each row needs the byte after its window as its last label.
    let n = bytes.len().saturating_sub(1) / window;
    if n == 0 {
        return Err(Error::Data(format!(
            "`{file}` holds {} bytes, too few for one window of {window} and the byte after it",
            bytes.len()
        )));
    }
    let ids = |from: usize| -> Vec<f64> {
        (0..n)
            .flat_map(|i| &bytes[i * window + from..i * window + from + window])
            .map(|&b| f64::from(b))
            .collect()
    };
    Ok(Dataset {
        x: Tensor::new(DType::F32, vec![n, window], ids(0)),
        y: Some(Tensor::new(DType::F64, vec![n, window], ids(1))),
        origin: (0..n)
            .map(|i| format!("bytes {}..{} of `{file}`", i * window, (i + 1) * window))
            .collect(),
        source: format!("`{file}`"),
        label_file: None,
    })
}

fn load_npy(x: &Path, y: Option<&Path>) -> Result<Dataset, Error> {
    let xa = npy::read(&read(x)?).map_err(|e| Error::Data(format!("`{}`: {e}", x.display())))?;
    if xa.shape.is_empty() {
        return Err(Error::Data(format!(
            "`{}` holds a scalar, not rows of features",
            x.display()
        )));
    }
    let n = xa.shape[0];
    let ya = match y {
        None => None,
        Some(p) => {
            let a =
                npy::read(&read(p)?).map_err(|e| Error::Data(format!("`{}`: {e}", p.display())))?;
            if a.shape.first() != Some(&n) {
                return Err(Error::Data(format!(
                    "`{}` has {} rows of features but `{}` has {} labels",
                    x.display(),
                    n,
                    p.display(),
                    a.shape.first().copied().unwrap_or(1)
                )));
            }
            Some(Tensor::new(DType::F64, a.shape, a.data))
        }
    };
    Ok(Dataset {
        x: Tensor::new(DType::F32, xa.shape, xa.data),
        y: ya,
        origin: (0..n)
            .map(|i| format!("row {i} of `{}`", x.display()))
            .collect(),
        source: match y {
            None => format!("`{}`", x.display()),
            Some(p) => format!("`{}` and `{}`", x.display(), p.display()),
        },
        label_file: y.map(|p| p.display().to_string()),
    })
}

impl Dataset {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.x.shape[0]
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows `idx`, in that order.
    pub fn rows(&self, idx: &[usize]) -> Dataset {
        let take = |t: &Tensor| {
            let per: usize = t.shape[1..].iter().product();
            let mut data = Vec::with_capacity(idx.len() * per);
            for &i in idx {
                data.extend_from_slice(&t.data[i * per..(i + 1) * per]);
            }
            let mut shape = t.shape.clone();
            shape[0] = idx.len();
            Tensor {
                dtype: t.dtype,
                shape,
                data,
            }
        };
        Dataset {
            x: take(&self.x),
            y: self.y.as_ref().map(take),
            origin: idx.iter().map(|&i| self.origin[i].clone()).collect(),
            source: self.source.clone(),
            label_file: self.label_file.clone(),
        }
    }

    /// Splits off the held-out rows: `(train, test)`.
    pub fn split(&self, split: Split) -> Result<(Dataset, Option<Dataset>), Error> {
        let n = self.len();
        let held = match split {
            Split::None => return Ok((self.clone(), None)),
            Split::Tail(k) => k,
            Split::Fraction(f) if (0.0..1.0).contains(&f) => (f * n as f64).round() as usize,
            Split::Fraction(f) => {
                return Err(Error::Data(format!(
                    "{}: test_fraction = {f} must be at least 0 and below 1",
                    self.source
                )));
            }
        };
        if held >= n {
            return Err(Error::Data(format!(
                "{}: holding out {held} rows for testing leaves none of the {n} rows to train on",
                self.source
            )));
        }
        let all: Vec<usize> = (0..n).collect();
        let (train, test) = all.split_at(n - held);
        Ok((self.rows(train), (held > 0).then(|| self.rows(test))))
    }

    /// Shapes the features as `x_ty` (with its first axis the batch) and checks and
    /// converts the labels to `y_ty`; integer labels must lie in `0..classes` when
    /// `classes` is known.
    pub fn fit(
        mut self,
        x_name: &str,
        x_ty: &TensorType,
        y: Option<(&str, &TensorType)>,
        classes: Option<usize>,
    ) -> Result<Dataset, Error> {
        let n = self.len();
        let dims = x_ty.shape.dims();
        let per: Option<Vec<usize>> = dims
            .iter()
            .skip(1)
            .map(|d| d.known().map(|k| k as usize))
            .collect();
        let Some(per) = per.filter(|_| !dims.is_empty()) else {
            return Err(Error::Data(format!(
                "the model's input `{x_name}: {x_ty}` needs a batch axis first and known sizes after it"
            )));
        };
        let want: usize = per.iter().product();
        let have: usize = self.x.shape[1..].iter().product();
        if want != have {
            return Err(Error::Data(format!(
                "{}: the data has {have} features per row, but the model's input `{x_name}: {x_ty}` takes {want}",
                self.source
            )));
        }
        self.x.shape = std::iter::once(n).chain(per).collect();
        self.x.dtype = x_ty.dtype;
        self.x.round();
        let Some((y_name, y_ty)) = y else {
            self.y = None;
            return Ok(self);
        };
        let Some(mut labels) = self.y.take() else {
            return Err(Error::Data(format!(
                "{}: the model trains against `{y_name}: {y_ty}`, but the data has no labels \
                 (name the label column with `label = \"...\"`, or give a labels file)",
                self.source
            )));
        };
        let want: usize = y_ty
            .shape
            .dims()
            .iter()
            .skip(1)
            .map(|d| d.known().unwrap_or(0) as usize)
            .product();
        let have: usize = labels.shape[1..].iter().product();
        if want != have {
            return Err(Error::Data(format!(
                "{}: the data has {have} label values per row, but `{y_name}: {y_ty}` takes {want}",
                self.source
            )));
        }
        if y_ty.dtype == DType::I32 {
            for (i, &v) in labels.data.iter().enumerate() {
                let bad = if v.fract() != 0.0 || v < 0.0 || v > i32::MAX as f64 {
                    Some(format!("label {v} is not a class number (0, 1, 2, ...)"))
                } else {
                    classes.filter(|&c| v as usize >= c).map(|c| {
                        format!(
                            "label {v} is outside 0..{} (the model has {c} classes)",
                            c - 1
                        )
                    })
                };
                if let Some(why) = bad {
                    let row = i / have.max(1);
                    let at = match &self.label_file {
                        Some(f) => format!("row {row} of `{f}`"),
                        None => self.origin[row].clone(),
                    };
                    return Err(Error::Data(format!("{at}: {why}")));
                }
            }
        }
        labels.shape = std::iter::once(n)
            .chain(
                y_ty.shape
                    .dims()
                    .iter()
                    .skip(1)
                    .map(|d| d.known().unwrap_or(0) as usize),
            )
            .collect();
        labels.dtype = y_ty.dtype;
        labels.round();
        self.y = Some(labels);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_spec(path: &Path, window: usize, split: Split) -> DataSpec {
        DataSpec {
            source: Source::Text {
                path: path.to_path_buf(),
                window,
            },
            scale: 1.0,
            split,
            normalize: Normalize::None,
        }
    }

    /// A text is cut into windows of bytes, each labelled with the bytes one further on;
    /// the tail is the end of the text; too short a text is an error naming its size.
    #[test]
    fn text_windows_predict_the_next_byte() {
        let dir = std::env::temp_dir().join(format!("nnc-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.txt");
        std::fs::write(&p, "abcdefghij").unwrap();
        let ds = load(&text_spec(&p, 3, Split::None)).unwrap();
        let b = |s: &str| s.bytes().map(f64::from).collect::<Vec<_>>();
        assert_eq!(ds.x.shape, vec![3, 3]);
        assert_eq!(ds.x.data, b("abcdefghi"));
        assert_eq!(ds.y.as_ref().unwrap().data, b("bcdefghij"));
        assert_eq!(ds.origin[2], format!("bytes 6..9 of `{}`", p.display()));
        let (train, test) = ds.split(Split::Tail(1)).unwrap();
        assert_eq!(train.x.data, b("abcdef"));
        assert_eq!(test.unwrap().y.unwrap().data, b("hij"));
        // Each window needs the byte after it: nine bytes make two windows of four, eight
        // make one.
        std::fs::write(&p, "abcdefghi").unwrap();
        assert_eq!(load(&text_spec(&p, 4, Split::None)).unwrap().len(), 2);
        std::fs::write(&p, "abcdefgh").unwrap();
        assert_eq!(load(&text_spec(&p, 4, Split::None)).unwrap().len(), 1);
        std::fs::write(&p, "abcd").unwrap();
        assert_eq!(
            load(&text_spec(&p, 4, Split::None)).unwrap_err(),
            Error::Data(format!(
                "`{}` holds 4 bytes, too few for one window of 4 and the byte after it",
                p.display()
            ))
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A bad label in a labels file names that file's row, not the features file's.
    #[test]
    fn npy_label_errors_name_the_labels_file() {
        let dir = std::env::temp_dir().join(format!("nnc-npy-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (xp, yp) = (dir.join("x.npy"), dir.join("y.npy"));
        let x = Tensor::new(DType::F32, vec![3, 2], vec![0.0; 6]);
        let y = Tensor::new(DType::F64, vec![3], vec![0.0, 1.0, 7.0]);
        std::fs::write(&xp, npy::write(&x)).unwrap();
        std::fs::write(&yp, npy::write(&y)).unwrap();
        let spec = DataSpec {
            source: Source::Npy {
                x: xp.clone(),
                y: Some(yp.clone()),
            },
            scale: 1.0,
            split: Split::None,
            normalize: Normalize::None,
        };
        let ds = load(&spec).unwrap();
        let x_ty = TensorType::new(
            DType::F32,
            nnc_ir::Shape(vec![nnc_ir::Dim::Sym("B".into()), nnc_ir::Dim::Known(2)]),
        );
        let y_ty = TensorType::new(
            DType::I32,
            nnc_ir::Shape(vec![nnc_ir::Dim::Sym("B".into())]),
        );
        let err = ds.fit("x", &x_ty, Some(("y", &y_ty)), Some(3)).unwrap_err();
        assert_eq!(
            err,
            Error::Data(format!(
                "row 2 of `{}`: label 7 is outside 0..2 (the model has 3 classes)",
                yp.display()
            ))
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
