//! Checkpoints: named tensors and string metadata in a safetensors file, written atomically
//! and checked on load.
//!
//! safetensors itself detects a truncated file or a malformed header but not a flipped bit
//! in the data, so nnc stores an FNV-1a checksum of every tensor (name, type, shape and
//! bytes) and of the other metadata under `nnc.checksum`, and refuses a file whose contents
//! do not match it. Writes go to a temporary file in the same folder, are flushed to disk
//! and then renamed over the target, so a crash leaves the old checkpoint or the new one,
//! never half of one.

use crate::Error;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use nnc_ir::DType;
use safetensors::tensor::Dtype;

use crate::tensor::Tensor;

/// The metadata key of the checksum.
pub use nnc_rt::weights::CHECKSUM_KEY;

/// Named tensors with metadata.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Checkpoint {
    /// Tensors in the order they were added (stored sorted by name in the file).
    pub tensors: Vec<(String, Tensor)>,
    /// String metadata (model name, step, settings).
    pub meta: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The tensor with this name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Serializes to safetensors bytes, checksum included. The header is written here
    /// rather than by the safetensors crate, whose metadata map is a `HashMap` and would
    /// make the key order (and so the file's bytes) differ from run to run; nnc promises
    /// that the same seed gives a bitwise-identical checkpoint. Reading goes through the
    /// crate, which validates the layout.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut raw: Vec<(&str, Dtype, &[usize], Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                (
                    n.as_str(),
                    st_dtype(t.dtype),
                    t.shape.as_slice(),
                    bytes_of(t),
                )
            })
            .collect();
        raw.sort_by(|a, b| a.0.cmp(b.0));
        if raw.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::Checkpoint("two tensors have the same name".into()));
        }
        let mut meta: BTreeMap<String, String> = self.meta.clone();
        meta.remove(CHECKSUM_KEY);
        let sum = checksum(
            raw.iter()
                .map(|(n, d, s, b)| (*n, format!("{d:?}"), *s, b.as_slice())),
            &meta,
        );
        meta.insert(CHECKSUM_KEY.into(), format!("{sum:016x}"));
        let mut header = serde_json::Map::new();
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(&meta).map_err(|e| Error::Checkpoint(e.to_string()))?,
        );
        let mut offset = 0usize;
        for (n, d, s, b) in &raw {
            header.insert(
                n.to_string(),
                serde_json::json!({
                    "dtype": format!("{d:?}"),
                    "shape": s,
                    "data_offsets": [offset, offset + b.len()],
                }),
            );
            offset += b.len();
        }
        // serde_json's map keeps keys sorted (no `preserve_order` feature), so the text
        // is a function of the contents alone.
        let mut text =
            serde_json::to_string(&header).map_err(|e| Error::Checkpoint(e.to_string()))?;
        while text.len() % 8 != 0 {
            text.push(' ');
        }
        let mut out = Vec::with_capacity(8 + text.len() + offset);
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
        for (_, _, _, b) in &raw {
            out.extend_from_slice(b);
        }
        Ok(out)
    }

    /// Parses safetensors bytes and verifies the checksum.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, Error> {
        let (st, meta) =
            nnc_rt::weights::verified(bytes, true).map_err(|e| Error::Checkpoint(e.to_string()))?;
        let mut named = st.tensors();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tensors = Vec::new();
        for (n, v) in named {
            let dtype = match v.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::F64 => DType::F64,
                Dtype::I32 => DType::I32,
                d => {
                    return Err(Error::Checkpoint(format!(
                        "tensor `{n}` has unsupported type {d:?}"
                    )));
                }
            };
            let data = v
                .data()
                .chunks_exact(dtype_size(dtype))
                .map(|c| match dtype {
                    DType::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                    DType::F64 => f64::from_le_bytes(c.try_into().unwrap()),
                    DType::I32 => i32::from_le_bytes(c.try_into().unwrap()) as f64,
                })
                .collect();
            tensors.push((n, Tensor::new(dtype, v.shape().to_vec(), data)));
        }
        Ok(Checkpoint { tensors, meta })
    }

    /// Writes the checkpoint to `path` atomically: a temporary file in the same folder,
    /// flushed to disk, then renamed over `path`.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let bytes = self.to_bytes()?;
        write_atomic(path, &bytes)
    }

    /// Reads and verifies a checkpoint file.
    pub fn load(path: &Path) -> Result<Checkpoint, Error> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Io(format!("cannot read `{}`: {e}", path.display())))?;
        Checkpoint::from_bytes(&bytes)
            .map_err(|e| Error::Checkpoint(format!("`{}`: {e}", path.display())))
    }
}

/// Writes bytes to `path` through a temporary file, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::Checkpoint(format!("`{}` is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io(format!("cannot write `{}`: {e}", path.display()))
    })
}

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I32 => Dtype::I32,
    }
}

fn dtype_size(d: DType) -> usize {
    match d {
        DType::F64 => 8,
        DType::F32 | DType::I32 => 4,
    }
}

fn bytes_of(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len() * dtype_size(t.dtype));
    for &v in &t.data {
        match t.dtype {
            DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            DType::F64 => out.extend_from_slice(&v.to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
        }
    }
    out
}

/// FNV-1a over every tensor (sorted by name) and the metadata (sorted by key). Any single
/// changed byte changes the result, since each step is a bijection of the state.
use nnc_rt::weights::checksum;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut c = Checkpoint::default();
        c.tensors.push((
            "h1.w".into(),
            Tensor::new(
                DType::F32,
                vec![2, 3],
                vec![0.5, -1.0, 2.0, 3.0, 0.25, 1e-3],
            ),
        ));
        c.tensors
            .push(("step".into(), Tensor::new(DType::I32, vec![], vec![7.0])));
        c.meta.insert("model".into(), "M".into());
        c
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let back = Checkpoint::from_bytes(&c.to_bytes().unwrap()).unwrap();
        assert_eq!(back.get("h1.w"), c.get("h1.w"));
        assert_eq!(back.get("step"), c.get("step"));
        assert_eq!(back.meta, c.meta);
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_refused() {
        let bytes = sample().to_bytes().unwrap();
        for n in 0..bytes.len() {
            assert!(
                Checkpoint::from_bytes(&bytes[..n]).is_err(),
                "truncated at {n}"
            );
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                // A flip in JSON whitespace padding is harmless and may be accepted, but
                // then the contents must be exactly the original's.
                if let Ok(c) = Checkpoint::from_bytes(&b) {
                    let orig = sample();
                    assert_eq!(c.get("h1.w"), orig.get("h1.w"), "byte {i} bit {bit}");
                    assert_eq!(c.meta, orig.meta, "byte {i} bit {bit}");
                }
            }
        }
    }
}
