//! `linear` and `logits`: `x[..., K] · w[N, K]ᵀ` with the weight in its stored dtype.
//!
//! Weight rows are dequantized on the fly (f32/f16/bf16/q8c/q4g alike, through
//! [`MatrixRows::read_row`]) and every product accumulates in f32.
//!
//! # Two kernels, and why the row count picks between them
//!
//! Up to [`ROW_INDEPENDENT_MAX_ROWS`] rows of `x` (a decode step, a speculative verification step, a
//! short prompt), every output element is `dot(w[n], x[r])` with the fixed-order dot kernel of
//! `cpu::dot`: rayon splits the output channels into blocks, and each block computes tiles of 4 weight
//! rows by up to 4 rows of `x` with [`dot_tile`], so that one load of a weight vector serves several
//! tokens (a verification step of k tokens costs far less than k decode steps) while every output keeps
//! exactly `dot`'s bits. The result of row `r` therefore depends on `x[r]` and the weights alone, not on
//! how many other rows the step has or where `r` sits among them, so it is bit-identical to what a
//! one-row step on `x[r]` computes. Speculative decoding relies on this: verifying position `i` inside a
//! multi-token step gives exactly the logits that decoding position `i` on its own gives, so greedy
//! speculation emits exactly the tokens of plain greedy decoding (the other per-token ops — norms, rope,
//! attention over the same keys in the same order, elementwise ops — are row-independent by
//! construction too).
//!
//! Above that (prompt prefill), `gemm` multiplies `x` by dequantized weight tiles. Its blocking makes an
//! element's summation order depend on the matrix sizes, which is fine there: a long prefill is the same
//! computation in plain and speculative decoding, and no verification step is that long (the decoding
//! loop caps the rows of a step at [`ROW_INDEPENDENT_MAX_ROWS`]).

use rayon::prelude::*;

use super::dot::dot_tile;
use super::value::MatrixRows;

/// Output channels per parallel block: large enough that `gemm` runs at speed, small enough that a
/// block's scratch tile (`BLOCK_ROWS * K` f32) stays in cache-friendly territory and blocks balance.
const BLOCK_ROWS: usize = 64;

/// Output channels per task of the row-independent path.
const GEMV_ROWS: usize = 32;

/// Weight rows per [`dot_tile`] of the row-independent path.
const TILE_CHANNELS: usize = 4;

/// Rows of `x` per [`dot_tile`] of the row-independent path (4 × 4 products: 16 of AVX-512's 32 vector
/// registers as accumulators).
const TILE_ROWS: usize = 4;

/// The most rows of `x` that the row-independent [`dot`] kernel computes (see the module docs): steps
/// of up to this many tokens give every token bit-identical results whatever else is in the step.
pub const ROW_INDEPENDENT_MAX_ROWS: usize = 64;

/// Checks `x[..., K]` against `w[N, K]`; returns `(rows of x, K, N)`.
pub fn check_matmul_shapes(x_shape: &[usize], w_shape: &[usize]) -> Result<(usize, usize, usize), String> {
    let &[n, k] = w_shape else {
        return Err(format!("the weight must be a matrix [N, K], but has shape {w_shape:?}"));
    };
    let Some(&xk) = x_shape.last() else {
        return Err("the input must have at least one dim".to_string());
    };
    if xk != k {
        return Err(format!("the input's last dim is {xk} but the weight {w_shape:?} expects {k}"));
    }
    let m = x_shape[..x_shape.len() - 1].iter().product();
    Ok((m, k, n))
}

/// `out[m, n] = Σ_k x[m, k] · w[n, k]` for a row-major `x[m, k]` and a weight matrix of `n` rows.
pub fn matmul_weight_rows(x: &[f32], m: usize, k: usize, w: &MatrixRows<'_>, n: usize) -> Vec<f32> {
    debug_assert_eq!(x.len(), m * k);
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0f32; m * n];
    }
    if m <= ROW_INDEPENDENT_MAX_ROWS {
        return row_independent(x, m, k, w, n);
    }
    let mut out = vec![0.0f32; m * n];
    let blocks: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(BLOCK_ROWS))
        .into_par_iter()
        .map(|block| {
            let n0 = block * BLOCK_ROWS;
            let nb = BLOCK_ROWS.min(n - n0);
            let mut tile = vec![0.0f32; nb * k];
            for (j, row) in tile.chunks_mut(k).enumerate() {
                w.read_row(n0 + j, row);
            }
            let mut dst = vec![0.0f32; m * nb];
            // SAFETY: `dst` is m×nb (row stride nb), `x` is m×k (row stride k) and the tile is nb×k,
            // read as the k×nb matrix tileᵀ (row stride 1, column stride k); all three are live,
            // exclusively owned or borrowed buffers of exactly those sizes, and `dst` does not alias.
            unsafe {
                gemm::gemm(
                    m,
                    nb,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    nb as isize,
                    false,
                    x.as_ptr(),
                    1,
                    k as isize,
                    tile.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            (n0, dst)
        })
        .collect();
    scatter_blocks(&mut out, blocks, m, n);
    out
}

/// The row-independent path (see the module docs): every output is [`dot_tile`]'s `dot(w[c], x[r])`.
///
/// Rayon splits the output channels into blocks of [`GEMV_ROWS`]; a block walks its channels
/// [`TILE_CHANNELS`] at a time, dequantizing those weight rows once, and dots them with the rows of `x`
/// [`TILE_ROWS`] at a time, so each weight vector loaded from memory serves up to [`TILE_ROWS`] tokens
/// and each input vector [`TILE_CHANNELS`] channels. The tile shape changes only which products share
/// loads, never how a product is summed.
fn row_independent(x: &[f32], m: usize, k: usize, w: &MatrixRows<'_>, n: usize) -> Vec<f32> {
    let xs: Vec<&[f32]> = x.chunks_exact(k).collect();
    let mut out = vec![0.0f32; m * n];
    let dst = DisjointColumns { ptr: out.as_mut_ptr(), rows: m, cols: n };
    (0..n.div_ceil(GEMV_ROWS)).into_par_iter().for_each(|block| {
        let n0 = block * GEMV_ROWS;
        let mut scratch = vec![0.0f32; TILE_CHANNELS * k];
        for c0 in (n0..(n0 + GEMV_ROWS).min(n)).step_by(TILE_CHANNELS) {
            let channels = TILE_CHANNELS.min(n - c0);
            let ws = weight_rows(w, c0, channels, k, &mut scratch);
            for (group, rows) in xs.chunks(TILE_ROWS).enumerate() {
                let tile = tile(ws, rows);
                for (c, values) in tile.iter().enumerate().take(channels) {
                    for (r, &v) in values.iter().enumerate().take(rows.len()) {
                        // SAFETY: this task is the only writer of columns n0..n0 + GEMV_ROWS (see
                        // `DisjointColumns`), and row/column are in bounds.
                        unsafe { dst.write(group * TILE_ROWS + r, c0 + c, v) };
                    }
                }
            }
        }
    });
    out
}

/// The row-major `[rows, cols]` output of [`row_independent`], written in place by parallel tasks that
/// each own a disjoint range of columns (so the product needs neither a channel-major buffer nor a
/// transposition afterwards, which cost more than the arithmetic for a 49k-row `logits`).
struct DisjointColumns {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
}

// SAFETY: tasks write disjoint elements (their own columns), and the buffer outlives the parallel loop.
unsafe impl Sync for DisjointColumns {}

impl DisjointColumns {
    /// # Safety
    /// `row < rows`, `col < cols`, and no other thread accesses element `(row, col)` meanwhile.
    unsafe fn write(&self, row: usize, col: usize, value: f32) {
        debug_assert!(row < self.rows && col < self.cols);
        // SAFETY: in bounds by the caller's contract; exclusive by the caller's contract.
        unsafe { *self.ptr.add(row * self.cols + col) = value };
    }
}

/// [`dot_tile`] of the weight rows `ws` with up to [`TILE_ROWS`] rows of `x`; entries past `rows.len()`
/// are zero.
fn tile(ws: [&[f32]; TILE_CHANNELS], rows: &[&[f32]]) -> [[f32; TILE_ROWS]; TILE_CHANNELS] {
    fn widen<const R: usize>(t: [[f32; R]; TILE_CHANNELS]) -> [[f32; TILE_ROWS]; TILE_CHANNELS] {
        t.map(|row| std::array::from_fn(|r| if r < R { row[r] } else { 0.0 }))
    }
    fn rows_of<'a, const R: usize>(rows: &[&'a [f32]]) -> [&'a [f32]; R] {
        std::array::from_fn(|r| rows[r])
    }
    match rows.len() {
        1 => widen(dot_tile::<TILE_CHANNELS, 1>(ws, rows_of(rows))),
        2 => widen(dot_tile::<TILE_CHANNELS, 2>(ws, rows_of(rows))),
        3 => widen(dot_tile::<TILE_CHANNELS, 3>(ws, rows_of(rows))),
        4 => widen(dot_tile::<TILE_CHANNELS, 4>(ws, rows_of(rows))),
        other => unreachable!("row groups hold 1 to {TILE_ROWS} rows, not {other}"),
    }
}

/// Weight rows `first..first + count` (`count` from 1 to [`TILE_CHANNELS`]) as f32 slices (dequantized
/// into `scratch` where needed); the tile is filled up by repeating the last row, whose extra outputs
/// the caller drops.
fn weight_rows<'a>(
    w: &'a MatrixRows<'_>,
    first: usize,
    count: usize,
    k: usize,
    scratch: &'a mut [f32],
) -> [&'a [f32]; TILE_CHANNELS] {
    let mut chunks = scratch.chunks_mut(k);
    let rows: [Option<&[f32]>; TILE_CHANNELS] = std::array::from_fn(|j| {
        (j < count).then(|| weight_row(w, first + j, k, chunks.next().expect("scratch has TILE_CHANNELS rows")))
    });
    let last = rows[count - 1].expect("count is at least 1");
    rows.map(|r| r.unwrap_or(last))
}

/// Weight row `r` as f32: borrowed when stored as f32, else dequantized into `scratch`.
fn weight_row<'a>(w: &'a MatrixRows<'_>, r: usize, k: usize, scratch: &'a mut [f32]) -> &'a [f32] {
    match w.row_slice(r, k) {
        Some(row) => row,
        None => {
            w.read_row(r, scratch);
            scratch
        }
    }
}

/// Copies column blocks `(first channel, [m, nb] values)` into the row-major `[m, n]` output.
fn scatter_blocks(out: &mut [f32], blocks: Vec<(usize, Vec<f32>)>, m: usize, n: usize) {
    for (n0, dst) in blocks {
        let nb = dst.len() / m;
        for (r, src) in dst.chunks(nb).enumerate() {
            out[r * n + n0..r * n + n0 + nb].copy_from_slice(src);
        }
    }
}

/// `linear(x[..., K], w[N, K], b?[N]) -> [..., N]` in f32; returns the values and the result shape.
pub fn linear(
    x: &[f32],
    x_shape: &[usize],
    w: &MatrixRows<'_>,
    w_shape: &[usize],
    bias: Option<&[f32]>,
) -> Result<(Vec<f32>, Vec<usize>), String> {
    let (m, k, n) = check_matmul_shapes(x_shape, w_shape)?;
    if let Some(b) = bias
        && b.len() != n
    {
        return Err(format!("the bias has {} elements but the weight has {n} output channels", b.len()));
    }
    let mut out = matmul_weight_rows(x, m, k, w, n);
    if let Some(b) = bias {
        for row in out.chunks_mut(n) {
            for (o, bi) in row.iter_mut().zip(b) {
                *o += bi;
            }
        }
    }
    let mut shape = x_shape.to_vec();
    *shape.last_mut().expect("checked non-empty") = n;
    Ok((out, shape))
}

/// `logits(x[..., H], w[V, H]) -> f32[..., V]`, soft-capped as `cap · tanh(l / cap)` when `softcap` is set.
pub fn logits(
    x: &[f32],
    x_shape: &[usize],
    w: &MatrixRows<'_>,
    w_shape: &[usize],
    softcap: Option<f32>,
) -> Result<(Vec<f32>, Vec<usize>), String> {
    let (mut out, shape) = linear(x, x_shape, w, w_shape, None)?;
    if let Some(cap) = softcap {
        // Written so that NaN is refused too.
        if cap.is_nan() || cap <= 0.0 {
            return Err(format!("softcap must be positive, not {cap}"));
        }
        for v in &mut out {
            *v = cap * (*v / cap).tanh();
        }
    }
    Ok((out, shape))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn every_row_is_computed_as_if_it_were_alone_up_to_the_limit() {
        let (k, n) = (200, 70);
        let w = values(n * k, 1);
        let rows = MatrixRows::Dense { data: Cow::Borrowed(&w), cols: k };
        let x = values(ROW_INDEPENDENT_MAX_ROWS * k, 2);
        let alone: Vec<Vec<f32>> = x.chunks(k).map(|xr| matmul_weight_rows(xr, 1, k, &rows, n)).collect();
        for m in [2, 3, 4, 5, 6, 7, 8, 9, 17, ROW_INDEPENDENT_MAX_ROWS] {
            let together = matmul_weight_rows(&x[..m * k], m, k, &rows, n);
            for (r, row) in together.chunks(n).enumerate() {
                let same = row.iter().zip(&alone[r]).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "m = {m}: row {r} differs from computing it alone");
            }
        }
        // Above the limit gemm takes over: the same values within rounding.
        let m = ROW_INDEPENDENT_MAX_ROWS + 1;
        let x = values(m * k, 3);
        let big = matmul_weight_rows(&x, m, k, &rows, n);
        for (r, row) in big.chunks(n).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let exact: f64 = (0..k).map(|i| f64::from(x[r * k + i]) * f64::from(w[c * k + i])).sum();
                assert!((f64::from(v) - exact).abs() < 1e-4, "row {r} col {c}: {v} vs {exact}");
            }
        }
    }
}
