//! What an ahead-of-time object is, whichever backend writes it: the spec `nnc build`
//! hands over, the exported functions' error codes, each input's and output's rows, and
//! the C header that declares them.

use crate::Error;

use std::collections::HashMap;

use nnc_ir::{Dim, Func};

/// Error codes of the exported functions, as the header names them (`nnc-rt` returns them).
pub use nnc_rt::forward::{EINDEX, EINVAL, EIO, ENOMEM, ENOWEIGHTS, EWEIGHTS, OK};

/// One 8-byte word of the descriptor `nnc_rt_forward` reads (`nnc_rt::forward::ForwardDesc`):
/// a number, or the address of one of the object's data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Word {
    Int(u64),
    /// The `rows` array.
    Rows,
    /// The kernels array: (rows per call, the kernel's address) per kernel.
    Kernels,
    /// The weights' address table.
    Table,
    /// The weights' names and sizes (for `_load`); null when the weights are embedded.
    Names,
    Lens,
}

/// The descriptor of a deployed forward pass, as a backend writes it: the `rows` array
/// (has rows, bytes per row; per input, then per output), the rows per call of each
/// kernel (most first), and the descriptor's words. The layout is
/// `nnc_rt::forward::ForwardDesc`'s; `tests/aot.rs` runs what it describes.
pub(crate) struct Descriptor {
    pub rows: Vec<u64>,
    pub kernel_rows: Vec<u64>,
    pub words: Vec<Word>,
}

/// The descriptor for kernels of `kernel_rows` rows per call needing `scratch_bytes`.
pub(crate) fn descriptor(
    spec: &ObjectSpec,
    kernel_rows: &[usize],
    scratch_bytes: usize,
) -> Result<Descriptor, Error> {
    use nnc_rt::forward::{GATHERS, WEIGHTS_FROM_FILE};
    let (ins, outs) = row_bytes(spec)?;
    let rows: Vec<u64> = ins
        .iter()
        .chain(&outs)
        .flat_map(|&(r, b)| [u64::from(r), b as u64])
        .collect();
    let file = spec.weights == Weights::File;
    let flags =
        if file { WEIGHTS_FROM_FILE } else { 0 } | if gathers(spec.func) { GATHERS } else { 0 };
    let fixed = match spec.batch {
        Batch::Fixed { n, .. } => n as u64,
        Batch::Any { .. } => 0,
    };
    let (names, lens) = if file {
        (Word::Names, Word::Lens)
    } else {
        (Word::Int(0), Word::Int(0))
    };
    let words = vec![
        Word::Int(ins.len() as u64),
        Word::Int(outs.len() as u64),
        Word::Rows,
        Word::Int(kernel_rows.len() as u64),
        Word::Kernels,
        Word::Int(fixed),
        Word::Int(scratch_bytes as u64),
        Word::Table,
        Word::Int(spec.func.params.len() as u64),
        names,
        lens,
        Word::Int(flags),
    ];
    debug_assert_eq!(
        8 * words.len(),
        std::mem::size_of::<nnc_rt::forward::ForwardDesc>()
    );
    Ok(Descriptor {
        rows,
        kernel_rows: kernel_rows.iter().map(|&r| r as u64).collect(),
        words,
    })
}

/// How the exported function takes its batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Batch {
    /// Any number of rows of the symbolic dimension `dim`, in chunks of `chunk`.
    Any { dim: String, chunk: usize },
    /// Exactly `n` rows (`dim` is the symbol they bind, if the inputs have one).
    Fixed { dim: Option<String>, n: usize },
}

/// What `nnc build` compiles.
pub struct ObjectSpec<'a> {
    /// The forward function, optimized.
    pub func: &'a Func,
    /// Its parameters' values, in `func.params` order.
    pub params: &'a [Vec<f32>],
    /// The C prefix of the exported names (`digits_mlp` gives `digits_mlp_forward`).
    pub symbol: String,
    pub batch: Batch,
    /// Sizes of the other symbolic dimensions.
    pub dims: HashMap<String, usize>,
    /// Lines for the header's opening comment (how the data was scaled, say).
    pub notes: Vec<String>,
    /// The code generator (LLVM needs the `llvm` feature).
    pub codegen: crate::Codegen,
    /// Whether the weights are inside the object or read at run time by `<symbol>_load`.
    pub weights: Weights,
}

/// Where a built model's weights come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weights {
    /// Inside the object, as read-only data.
    #[default]
    Embedded,
    /// From a safetensors file (an nnc checkpoint, say), by name, through `<symbol>_load`.
    File,
}

/// The object file (ELF on Linux) and its C header.
pub struct Built {
    pub object: Vec<u8>,
    pub header: String,
    /// Bytes the function allocates per call (scratch memory).
    pub scratch_bytes: usize,
    /// Bytes of embedded weights.
    pub weight_bytes: usize,
}

/// Whether the function reads rows by id (so its wrapper checks the ids' errors).
pub(crate) fn gathers(f: &nnc_ir::Func) -> bool {
    f.nodes
        .iter()
        .any(|n| matches!(n.op, nnc_ir::Op::Gather | nnc_ir::Op::ScatterAdd))
}

pub(crate) fn io_shape(
    ty: &nnc_ir::TensorType,
    batch: &Batch,
    dims: &HashMap<String, usize>,
) -> Result<(bool, Vec<usize>), Error> {
    let b = match batch {
        Batch::Any { dim, .. } => Some(dim),
        Batch::Fixed { dim, .. } => dim.as_ref(),
    };
    let mut rows = false;
    let mut shape = Vec::new();
    for (k, d) in ty.shape.dims().iter().enumerate() {
        match d {
            Dim::Sym(s) if Some(s) == b && k == 0 => rows = true,
            Dim::Sym(s) => match dims.get(s) {
                Some(&n) => shape.push(n),
                None => {
                    return Err(Error::Input(format!(
                        "no size for the dimension `{s}` (give it with --dim {s}=N)"
                    )));
                }
            },
            Dim::Known(n) => shape.push(*n as usize),
        }
    }
    Ok((rows, shape))
}

/// Whether an input or output has rows (the batch axis), and its bytes per row.
type Rowed = (bool, usize);

/// Each input's and each output's rows and bytes per row.
pub(crate) fn row_bytes(spec: &ObjectSpec) -> Result<(Vec<Rowed>, Vec<Rowed>), Error> {
    let f = spec.func;
    let each = |ty: &nnc_ir::TensorType| -> Result<(bool, usize), Error> {
        let (rows, shape) = io_shape(ty, &spec.batch, &spec.dims)?;
        Ok((rows, 4 * shape.iter().product::<usize>()))
    };
    let ins = f
        .inputs
        .iter()
        .map(|a| each(&a.ty))
        .collect::<Result<_, _>>()?;
    let outs = f
        .output_types()
        .iter()
        .map(|t| each(t))
        .collect::<Result<_, _>>()?;
    Ok((ins, outs))
}

/// The C header: the function, its shapes and error codes.
pub(crate) fn header(spec: &ObjectSpec) -> Result<String, Error> {
    let f = spec.func;
    let upper = spec.symbol.to_uppercase();
    let (ins, outs) = row_bytes(spec)?;
    let shape_text = |ty: &nnc_ir::TensorType| -> Result<String, Error> {
        let (rows, shape) = io_shape(ty, &spec.batch, &spec.dims)?;
        let mut parts: Vec<String> = Vec::new();
        if rows {
            parts.push("batch".into());
        }
        parts.extend(shape.iter().map(|n| n.to_string()));
        Ok(format!("[{}]", parts.join(", ")))
    };
    let mut h = String::new();
    h += &format!(
        "/* {sym}.h: the forward pass of the model `{model}`, compiled ahead of time by nnc.\n *\n",
        sym = spec.symbol,
        model = f.name
    );
    h += " * Link the object file with nnc's run-time kernels: libnnc_rt.a (and -lpthread -ldl -lm)\n";
    h += match spec.weights {
        Weights::Embedded => {
            " * from C, or the nnc-rt crate from Rust. The weights are inside the object.\n"
        }
        Weights::File => {
            " * from C, or the nnc-rt crate from Rust. The weights are read at run time from a\n * safetensors file (an nnc checkpoint) by name: call _load before _forward.\n"
        }
    };
    h += " * Machine code for the CPU nnc ran on (its vector extensions); row-major float32 arrays.\n";
    match &spec.batch {
        Batch::Any { chunk, .. } => {
            h += &format!(" * Any batch size; rows run {chunk} at a time, then one by one.\n")
        }
        Batch::Fixed { n, .. } => h += &format!(" * Compiled for a batch of exactly {n} rows.\n"),
    }
    for n in &spec.notes {
        h += &format!(" * {n}\n");
    }
    h += " */\n";
    h += &format!("#ifndef {upper}_H\n#define {upper}_H\n\n#include <stddef.h>\n\n");
    h += "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n";
    for (a, (_, bytes)) in f.inputs.iter().zip(&ins) {
        h += &format!(
            "/* input `{}`: float32 {} */\n#define {upper}_{}_SIZE {}\n",
            a.name,
            shape_text(&a.ty)?,
            c_ident(&a.name).to_uppercase(),
            bytes / 4
        );
    }
    for (k, (ty, (_, bytes))) in f.output_types().iter().zip(&outs).enumerate() {
        h += &format!(
            "/* output {k}: float32 {} */\n#define {upper}_OUTPUT{}_SIZE {}\n",
            shape_text(ty)?,
            if outs.len() == 1 {
                String::new()
            } else {
                k.to_string()
            },
            bytes / 4
        );
    }
    if let Batch::Fixed { n, .. } = &spec.batch {
        h += &format!("#define {upper}_BATCH {n}\n");
    }
    h += &format!(
        "\n#define {upper}_OK {OK}\n/* a null pointer, batch 0{} */\n#define {upper}_EINVAL {EINVAL}\n/* scratch memory could not be allocated */\n#define {upper}_ENOMEM {ENOMEM}\n",
        if matches!(spec.batch, Batch::Fixed { .. }) {
            " or another batch size"
        } else {
            ""
        }
    );
    if gathers(f) {
        h += &format!(
            "/* an id (an embedding's) outside its table: the outputs of its rows are not valid */\n#define {upper}_EINDEX {EINDEX}\n"
        );
    }
    if spec.weights == Weights::File {
        h += &format!(
            "/* _load: the file cannot be read, or is not safetensors */\n#define {upper}_EIO {EIO}\n\
             /* _load: a weight is missing or of another type or size, or the checksum fails */\n#define {upper}_EWEIGHTS {EWEIGHTS}\n\
             /* _forward before a successful _load */\n#define {upper}_ENOWEIGHTS {ENOWEIGHTS}\n\n"
        );
        h += "/* The weights _load reads, by name (float32):\n";
        for (p, v) in f.params.iter().zip(spec.params) {
            h += &format!(" *   {} {} ({} floats)\n", p.name, p.ty.shape, v.len());
        }
        h += " */\n";
        h += &format!(
            "/* Reads every weight from the safetensors file at `path`; on failure the weights\n * loaded before (if any) stay, and nnc_rt_error() says why. Not thread-safe with\n * _forward. */\nint {}_load(const char *path);\n/* Why the last _load failed. */\nconst char *nnc_rt_error(void);\n",
            spec.symbol
        );
    }
    h += "\n";
    let mut params: Vec<String> = f
        .inputs
        .iter()
        .map(|a| format!("const float *{}", c_ident(&a.name)))
        .collect();
    if outs.len() == 1 {
        params.push("float *y".into());
    } else {
        params.extend((0..outs.len()).map(|k| format!("float *y{k}")));
    }
    params.push("size_t batch".into());
    h += "/* Each size above is floats per row (per call with a fixed batch). Thread-safe: each\n * call allocates its own scratch memory. Returns one of the codes above. */\n";
    h += &format!("int {}_forward({});\n", spec.symbol, params.join(", "));
    h += "\n#ifdef __cplusplus\n}\n#endif\n\n";
    h += &format!("#endif /* {upper}_H */\n");
    Ok(h)
}

/// A C identifier for a name (`h1.w` -> `h1_w`; a leading digit gets `_`).
pub fn c_ident(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// `DigitsMlp` -> `digits_mlp`: the model's name as a C prefix.
pub fn snake_case(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if i > 0 && (prev_lower || (next_lower && chars[i - 1].is_ascii_uppercase())) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    c_ident(&out)
}

#[cfg(test)]
mod tests {
    use super::{c_ident, snake_case};

    #[test]
    fn names_become_c_identifiers() {
        assert_eq!(snake_case("DigitsMlp"), "digits_mlp");
        assert_eq!(snake_case("Lenet5"), "lenet5");
        assert_eq!(snake_case("MLP784"), "mlp784");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(c_ident("h1.w"), "h1_w");
        assert_eq!(c_ident("2x"), "_2x");
    }
}
