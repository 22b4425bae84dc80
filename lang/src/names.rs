//! The names the language knows without a definition: built-in functions over the
//! primitive ops, initializers, schedules, data sources and train settings. Each table
//! here is the single list the checker, the resolver and the docs read.

use nnc_ir::{Class, Sig, TABLE};

/// Initializers usable after `param w: T = ...`, with their keyword parameters and defaults.
pub const INITIALIZERS: &[(&str, &[(&str, f64)])] = &[
    ("zeros", &[]),
    ("ones", &[]),
    ("fill", &[("value", f64::NAN)]),
    ("normal", &[("mean", 0.0), ("std", 1.0)]),
    ("uniform", &[("lo", -1.0), ("hi", 1.0)]),
    ("xavier_uniform", &[("gain", 1.0)]),
    ("xavier_normal", &[("gain", 1.0)]),
    ("glorot_uniform", &[("gain", 1.0)]),
    ("glorot_normal", &[("gain", 1.0)]),
    ("he_uniform", &[("gain", std::f64::consts::SQRT_2)]),
    ("he_normal", &[("gain", std::f64::consts::SQRT_2)]),
    ("kaiming_uniform", &[("gain", std::f64::consts::SQRT_2)]),
    ("kaiming_normal", &[("gain", std::f64::consts::SQRT_2)]),
    ("fan_in_uniform", &[]),
];

/// What a keyword argument of a schedule or data source must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// An integer >= 1.
    PositiveInt,
    /// An integer >= 0.
    Count,
    /// A number > 0.
    Positive,
    /// A number >= 0.
    NonNegative,
    /// A number in [0, 1).
    Fraction,
    /// A string (a path or a column name).
    Text,
    /// `true` or `false`.
    Bool,
}

impl ArgKind {
    /// How the requirement reads in an error message.
    pub fn describe(self) -> &'static str {
        match self {
            ArgKind::PositiveInt => "a positive integer",
            ArgKind::Count => "a non-negative integer",
            ArgKind::Positive => "a positive number",
            ArgKind::NonNegative => "a non-negative number",
            ArgKind::Fraction => "a number at least 0 and below 1",
            ArgKind::Text => "a string",
            ArgKind::Bool => "true or false",
        }
    }
}

/// Learning-rate schedules and their keyword arguments (defaults are the training
/// driver's: `step(every = 10, gamma = 0.1)`, `exponential(gamma = 0.95)`,
/// `cosine(warmup = 0, min_lr = 0)` with warmup in steps, `one_cycle(pct_start = 0.3,
/// div = 25, final_div = 1e4)`).
pub const SCHEDULES: &[(&str, &[(&str, ArgKind)])] = &[
    ("constant", &[]),
    (
        "step",
        &[
            ("every", ArgKind::PositiveInt),
            ("gamma", ArgKind::Positive),
        ],
    ),
    ("exponential", &[("gamma", ArgKind::Positive)]),
    (
        "cosine",
        &[("warmup", ArgKind::Count), ("min_lr", ArgKind::NonNegative)],
    ),
    (
        "one_cycle",
        &[
            ("pct_start", ArgKind::Fraction),
            ("div", ArgKind::Positive),
            ("final_div", ArgKind::Positive),
        ],
    ),
];

/// Data sources for `data = ...` in train blocks. Paths are relative to the `.nn` file.
pub const DATA_SOURCES: &[(&str, &[(&str, ArgKind)])] = &[
    (
        "csv",
        &[
            ("path", ArgKind::Text),
            ("label", ArgKind::Text),
            ("scale", ArgKind::Positive),
            ("test_tail", ArgKind::Count),
            ("test_fraction", ArgKind::Fraction),
            ("standardize", ArgKind::Bool),
            ("min_max", ArgKind::Bool),
        ],
    ),
    (
        "npy",
        &[
            ("x", ArgKind::Text),
            ("y", ArgKind::Text),
            ("scale", ArgKind::Positive),
            ("test_tail", ArgKind::Count),
            ("test_fraction", ArgKind::Fraction),
            ("standardize", ArgKind::Bool),
            ("min_max", ArgKind::Bool),
        ],
    ),
    (
        "text",
        &[
            ("path", ArgKind::Text),
            ("window", ArgKind::Count),
            ("test_tail", ArgKind::Count),
            ("test_fraction", ArgKind::Fraction),
        ],
    ),
];

/// What a train setting holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingKind {
    /// A float scalar tensor computed from the model's output.
    Loss,
    /// A call to a rule.
    Optimizer,
    /// A call to a schedule.
    Schedule,
    /// A positive integer.
    PositiveInt,
    /// A non-negative integer.
    Int,
    /// A non-negative float.
    Float,
    /// A call to a data source.
    Data,
}

/// Train settings, their kinds, and whether they are required.
pub const SETTINGS: &[(&str, SettingKind, bool)] = &[
    ("loss", SettingKind::Loss, true),
    ("optimizer", SettingKind::Optimizer, true),
    ("schedule", SettingKind::Schedule, false),
    ("batch", SettingKind::PositiveInt, false),
    ("epochs", SettingKind::PositiveInt, false),
    ("seed", SettingKind::Int, false),
    ("clip", SettingKind::Float, false),
    ("grad_noise", SettingKind::Float, false),
    ("data", SettingKind::Data, false),
];

/// Primitive ops callable by their mnemonic from the language, with broadcasting (the op
/// table's `Sig`), and `random`, which the language calls with the step's key supplied.
pub fn primitive_functions() -> impl Iterator<Item = &'static str> {
    TABLE
        .iter()
        .filter(|row| row.sig != Sig::None || row.op == nnc_ir::Op::Random)
        .map(|row| row.mnemonic)
}

/// Whether `name` is a built-in function (a primitive, an initializer, a schedule or a
/// data source).
pub fn is_builtin_function(name: &str) -> bool {
    builtin_functions().any(|n| n == name)
}

/// Built-in functions that are not a primitive of their own name: `size(x, axis)` gives
/// the static size of an axis (an integer, or a dimension name), `shape(x)` the list of
/// them; `full(shape, value)` is a
/// constant tensor (`const`), whose shape may hold dimension names; `stack(xs, axis)`
/// joins tensors along a new axis (a `concat` of size-1 axes); `steps(xs, axis)` is the
/// iterable of a `for` that becomes a loop in the IR. (`random(shape)` is the `random`
/// primitive with the step's key supplied.)
pub const STATIC_FUNCTIONS: &[&str] = &["size", "shape", "full", "stack", "steps"];

/// All built-in function names.
pub fn builtin_functions() -> impl Iterator<Item = &'static str> {
    primitive_functions()
        .chain(STATIC_FUNCTIONS.iter().copied())
        .chain(INITIALIZERS.iter().map(|(n, _)| *n))
        .chain(SCHEDULES.iter().map(|(n, _)| *n))
        .chain(DATA_SOURCES.iter().map(|(n, _)| *n))
}

/// Names that are values everywhere: booleans and element types.
pub fn is_global_name(name: &str) -> bool {
    matches!(name, "true" | "false" | "training" | "f32" | "f64" | "i32")
        || INITIALIZERS.iter().any(|(n, _)| *n == name)
}

/// The class of a primitive by mnemonic.
pub fn class_of(mnemonic: &str) -> Option<(nnc_ir::Op, Class)> {
    TABLE
        .iter()
        .find(|r| r.mnemonic == mnemonic)
        .map(|r| (r.op, r.class))
}
