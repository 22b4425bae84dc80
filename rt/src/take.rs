//! Gather and scatter-add along one axis, with the ids checked: an id that is not a row of
//! the table is recorded (the first per thread, for the caller to report) and its row is
//! zeros; nothing outside the table is ever read or written.

use std::cell::Cell;

/// A gather or scatter id that was not a row of its table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IndexError {
    /// Whether it was a gather (else a scatter-add).
    pub gather: bool,
    /// The source line the compiler put in the descriptor (0: none).
    pub line: i64,
    /// The id.
    pub id: f32,
    /// The table's rows.
    pub rows: i64,
}

thread_local! {
    static INDEX_ERROR: Cell<Option<IndexError>> = const { Cell::new(None) };
}

/// The first index error on this thread since the last call, and clears it.
pub fn take_index_error() -> Option<IndexError> {
    INDEX_ERROR.with(|e| e.take())
}

/// Whether an index error happened on this thread since the last call, and clears it
/// (a deployed `_forward` asks after running its kernels).
#[unsafe(no_mangle)]
pub extern "C" fn nnc_rt_index_error() -> i64 {
    i64::from(INDEX_ERROR.with(|e| e.take()).is_some())
}

/// `kind` 0, gather: `y[o, j, i] = x[o, ids[j], i]`; `kind` 1, scatter-add: `y = 0`, then
/// `y[o, ids[j], i] += x[o, j, i]`. Ids are integers held as floats.
///
/// # Safety
/// `desc` is `[outer, rows, inner, n, line]`: the table is `[outer, rows, inner]`, `ids`
/// holds `n` values, the gathered side is `[outer, n, inner]`; the buffers fit it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_take(
    kind: i64,
    ids: *const f32,
    x: *const f32,
    y: *mut f32,
    desc: *const i64,
) {
    let d = unsafe { std::slice::from_raw_parts(desc, 5) };
    let [outer, rows, inner, n] = [d[0], d[1], d[2], d[3]].map(|v| v as usize);
    let ids = unsafe { std::slice::from_raw_parts(ids, n) };
    let (table, gathered) = (outer * rows * inner, outer * n * inner);
    let gather = kind == 0;
    let (xs, ys) = if gather {
        (unsafe { std::slice::from_raw_parts(x, table) }, unsafe {
            std::slice::from_raw_parts_mut(y, gathered)
        })
    } else {
        (unsafe { std::slice::from_raw_parts(x, gathered) }, unsafe {
            std::slice::from_raw_parts_mut(y, table)
        })
    };
    if !gather {
        ys.fill(0.0);
    }
    for (j, &id) in ids.iter().enumerate() {
        // NaN fails both comparisons.
        if !(id >= 0.0 && (id as usize) < rows) {
            INDEX_ERROR.with(|e| {
                if e.get().is_none() {
                    e.set(Some(IndexError {
                        gather,
                        line: d[4],
                        id,
                        rows: rows as i64,
                    }));
                }
            });
            if gather {
                for o in 0..outer {
                    ys[(o * n + j) * inner..][..inner].fill(0.0);
                }
            }
            continue;
        }
        let r = id as usize;
        for o in 0..outer {
            let t = (o * rows + r) * inner;
            let g = (o * n + j) * inner;
            if gather {
                ys[g..g + inner].copy_from_slice(&xs[t..t + inner]);
            } else {
                for (a, b) in ys[t..t + inner].iter_mut().zip(&xs[g..g + inner]) {
                    *a += b;
                }
            }
        }
    }
}
