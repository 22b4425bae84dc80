//! The front end's bounds on hostile input, in one place: each is checked before the work
//! it bounds, and exceeding it is an error with a span (E0003, E0004, E0006, E0221),
//! never a stack overflow or a run of minutes.

/// Brackets may nest this deep; deeper input is rejected before pest sees it, since
/// pest, like every recursive-descent parser, recurses once per level.
pub const MAX_NESTING: usize = 64;

/// One expression may hold this many operators; the tree of a longer one would be deeper
/// than the checker should recurse.
pub const MAX_OPERATORS: usize = 256;

/// The most iterations a `for` may unroll to (each one inlines its body again).
pub const MAX_UNROLL: i64 = 4096;

/// The most statements one function may elaborate, loops and layer calls unrolled
/// (nested loops multiply: 4096 x 4096 would otherwise run for minutes).
pub const MAX_STATEMENTS: u64 = 1_000_000;
