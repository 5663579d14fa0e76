//! Sliding-window ops: `conv` (grouped, strided, dilated, padded cross-correlation) and `pool`
//! (max, average, Lp), and `resize` (nearest, linear and cubic interpolation, one axis at a time). Both enumerate, for every output position, the input positions of its window
//! (`None` for padding), computing in the compute type (f32 for f32/f16/bf16, f64 for f64).

use super::compute::Values;
use super::{Cx, EvalError};
use crate::tensor::contiguous_strides;
use crate::{Dim, NearestRounding, PoolKind, ResizeCoord, ResizeMode, Tensor};

/// Strides, pads (begins then ends) and dilations, empty meaning the defaults.
pub(super) struct Geometry<'a> {
    pub strides: &'a [i64],
    pub pads: &'a [i64],
    pub dilations: &'a [i64],
}

/// For each output spatial position, for each kernel position: the input spatial flat index, or
/// `None` when the tap falls in the padding; and whether it lies within the padded extent.
struct Taps {
    out_dims: Vec<usize>,
    kernel_len: usize,
    taps: Vec<Option<usize>>,
    in_padded: Vec<bool>,
}

fn taps(cx: Cx, spatial: &[usize], kernel: &[usize], g: &Geometry, ceil_mode: bool) -> Result<Taps, EvalError> {
    let r = spatial.len();
    let dims: Vec<Dim> = spatial.iter().map(|&d| Dim::Static(d as u64)).collect();
    let k: Vec<Option<u64>> = kernel.iter().map(|&k| Some(k as u64)).collect();
    let out = crate::infer::window_output_dims(&dims, &k, g.strides, g.pads, g.dilations, ceil_mode)
        .map_err(|m| cx.err(m))?;
    let out_dims: Vec<usize> = out.iter().map(|d| d.as_static().expect("static in, static out") as usize).collect();
    let get = |v: &[i64], i: usize, d: i64| v.get(i).copied().unwrap_or(d);
    let n_out: usize = cx.numel(&out_dims)?;
    let kernel_len: usize = kernel.iter().product();
    cx.numel(&[n_out, kernel_len])?;
    let in_strides = contiguous_strides(spatial);
    let mut taps = Vec::with_capacity(n_out * kernel_len);
    let mut in_padded = Vec::with_capacity(n_out * kernel_len);
    for o in 0..n_out {
        for kk in 0..kernel_len {
            let (mut flat, mut inside, mut padded) = (0usize, true, true);
            let (mut orem, mut krem) = (o, kk);
            for i in (0..r).rev() {
                let (oc, kc) = (orem % out_dims[i], krem % kernel[i]);
                orem /= out_dims[i];
                krem /= kernel[i];
                let pos = oc as i64 * get(g.strides, i, 1) - get(g.pads, i, 0) + kc as i64 * get(g.dilations, i, 1);
                let n = spatial[i] as i64;
                if !(0..n).contains(&pos) {
                    inside = false;
                }
                if pos < -get(g.pads, i, 0) || pos >= n + get(g.pads, i + r, 0) {
                    padded = false;
                }
                flat += pos.max(0) as usize * in_strides[i];
            }
            taps.push(inside.then_some(flat));
            in_padded.push(padded);
        }
    }
    Ok(Taps { out_dims, kernel_len, taps, in_padded })
}

pub(super) fn conv(cx: Cx, inputs: &[&Tensor], g: Geometry, group: i64) -> Result<Tensor, EvalError> {
    let (x, w, b) = (inputs[0], inputs[1], inputs.get(2).copied());
    if x.shape().len() < 3 || w.shape().len() != x.shape().len() || w.dtype() != x.dtype() || group <= 0 {
        return Err(cx.err(format!("x {} and w {} do not fit a convolution in {group} groups", x.ty(), w.ty())));
    }
    let (xs, ws) = (x.shape(), w.shape());
    let (n, c, m, cg) = (xs[0], xs[1], ws[0], ws[1]);
    let group = group as usize;
    if cg * group != c {
        return Err(cx.err(format!("x has {c} channels but w expects {cg} per group times {group} groups")));
    }
    if m % group != 0 {
        return Err(cx.err(format!("{m} filters do not split into {group} groups")));
    }
    if let Some(b) = b
        && b.len() != m
    {
        return Err(cx.err(format!("the bias {} must have {m} elements", b.ty())));
    }
    let t = taps(cx, &xs[2..], &ws[2..], &g, false)?;
    let n_out: usize = t.out_dims.iter().product();
    let in_len: usize = xs[2..].iter().product();
    let mut out_shape = vec![n, m];
    out_shape.extend(&t.out_dims);
    let xv = x.to_f64_vec();
    let wv = w.to_f64_vec();
    let bv = b.map(|b| b.to_f64_vec());
    let mut out = vec![0.0f64; n * m * n_out];
    let per_group = m / group;
    for ni in 0..n {
        for mi in 0..m {
            let gi = mi / per_group;
            for o in 0..n_out {
                let mut acc = bv.as_ref().map_or(0.0, |b| b[mi]);
                for ci in 0..cg {
                    let xc = gi * cg + ci;
                    if xc >= c {
                        return Err(cx.err(format!("channel {xc} is out of range for x {}", x.ty())));
                    }
                    let xbase = (ni * c + xc) * in_len;
                    let wbase = (mi * cg + ci) * t.kernel_len;
                    for k in 0..t.kernel_len {
                        if let Some(p) = t.taps[o * t.kernel_len + k] {
                            acc += xv[xbase + p] * wv[wbase + k];
                        }
                    }
                }
                out[(ni * m + mi) * n_out + o] = acc;
            }
        }
    }
    Ok(cx.tensor(out_shape, crate::TensorData::from_f64(x.dtype(), out).map_err(|e| cx.err(e.to_string()))?))
}

pub(super) fn pool(
    cx: Cx,
    x: &Tensor,
    kernel: &[i64],
    g: Geometry,
    (kind, ceil_mode, count_include_pad, p): (PoolKind, bool, bool, i64),
) -> Result<Tensor, EvalError> {
    let xs = x.shape();
    if xs.len() < 3 || kernel.len() != xs.len() - 2 || kernel.iter().any(|&k| k <= 0) {
        return Err(cx.err(format!("kernel {kernel:?} does not fit x {}", x.ty())));
    }
    if matches!(Values::widen(x.data()), Values::Bool(_)) {
        return Err(cx.err(format!("not defined on bool tensors (input {})", x.ty())));
    }
    let kernel: Vec<usize> = kernel.iter().map(|&k| k as usize).collect();
    let t = taps(cx, &xs[2..], &kernel, &g, ceil_mode)?;
    let n_out: usize = t.out_dims.iter().product();
    let in_len: usize = xs[2..].iter().product();
    let planes = xs[0] * xs[1];
    let xv = x.to_f64_vec();
    let mut out = Vec::with_capacity(planes * n_out);
    for pl in 0..planes {
        let base = pl * in_len;
        for o in 0..n_out {
            let window = &t.taps[o * t.kernel_len..(o + 1) * t.kernel_len];
            let vals = window.iter().flatten().map(|&q| xv[base + q]);
            out.push(match kind {
                PoolKind::Max => vals.fold(f64::NEG_INFINITY, |a, b| if b > a || b.is_nan() { b } else { a }),
                PoolKind::Avg => {
                    let count = if count_include_pad {
                        t.in_padded[o * t.kernel_len..(o + 1) * t.kernel_len].iter().filter(|&&b| b).count()
                    } else {
                        window.iter().flatten().count()
                    };
                    vals.sum::<f64>() / count.max(1) as f64
                }
                PoolKind::Lp => vals.map(|v| v.abs().powi(p as i32)).sum::<f64>().powf(1.0 / p as f64),
            });
        }
    }
    let mut out_shape = xs[..2].to_vec();
    out_shape.extend(&t.out_dims);
    Ok(cx.tensor(out_shape, crate::TensorData::from_f64(x.dtype(), out).map_err(|e| cx.err(e.to_string()))?))
}

/// For output index `o` of an axis of `n` inputs resized to `m` with scale `s`: the input taps and
/// their weights.
fn resize_taps(
    (mode, coord, nearest): (ResizeMode, ResizeCoord, NearestRounding),
    (cubic_a, exclude_outside): (f64, bool),
    n: usize,
    m: usize,
    s: f64,
    o: usize,
) -> Vec<(usize, f64)> {
    let (nf, mf, of) = (n as f64, m as f64, o as f64);
    let x = match coord {
        ResizeCoord::HalfPixel => (of + 0.5) / s - 0.5,
        ResizeCoord::HalfPixelSymmetric => {
            let adj = mf / (s * nf);
            nf / 2.0 * (1.0 - adj) + (of + 0.5) / s - 0.5
        }
        ResizeCoord::PytorchHalfPixel => {
            if m > 1 {
                (of + 0.5) / s - 0.5
            } else {
                0.0
            }
        }
        // The resized length is `s * n`, which with scales need not be the integer output size.
        ResizeCoord::AlignCorners => {
            if m == 1 || s * nf <= 1.0 {
                0.0
            } else {
                of * (nf - 1.0) / (s * nf - 1.0)
            }
        }
        ResizeCoord::Asymmetric => of / s,
    };
    let clamp = |i: i64| i.clamp(0, n as i64 - 1) as usize;
    match mode {
        ResizeMode::Nearest => {
            let i = match nearest {
                NearestRounding::RoundPreferFloor => {
                    if x.fract() == 0.5 {
                        x.floor()
                    } else {
                        x.round()
                    }
                }
                NearestRounding::RoundPreferCeil => x.round(),
                NearestRounding::Floor => x.floor(),
                NearestRounding::Ceil => x.ceil(),
            };
            vec![(clamp(i as i64), 1.0)]
        }
        ResizeMode::Linear => {
            let x = x.clamp(0.0, nf - 1.0);
            let i0 = x.floor();
            let t = x - i0;
            vec![(clamp(i0 as i64), 1.0 - t), (clamp(i0 as i64 + 1), t)]
        }
        ResizeMode::Cubic => {
            let i0 = x.floor();
            let t = x - i0;
            let a = cubic_a;
            let outer = |d: f64| ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
            let inner = |d: f64| ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
            let w = [outer(t + 1.0), inner(t), inner(1.0 - t), outer(2.0 - t)];
            let idx = [i0 as i64 - 1, i0 as i64, i0 as i64 + 1, i0 as i64 + 2];
            let mut taps: Vec<(i64, f64)> = idx.into_iter().zip(w).collect();
            if exclude_outside {
                taps.retain(|&(i, _)| (0..n as i64).contains(&i));
                let total: f64 = taps.iter().map(|t| t.1).sum();
                for t in &mut taps {
                    t.1 /= total;
                }
            }
            taps.into_iter().map(|(i, w)| (clamp(i), w)).collect()
        }
    }
}

pub(super) fn resize(
    cx: Cx,
    x: &Tensor,
    modes: (ResizeMode, ResizeCoord, NearestRounding),
    cubic: (f64, bool),
    scales: &[f64],
    sizes: &[i64],
) -> Result<Tensor, EvalError> {
    let rank = x.shape().len();
    if scales.len() != rank || sizes.len() != rank || sizes.iter().any(|&s| s < 0) {
        return Err(cx.err(format!("scales {scales:?} and sizes {sizes:?} do not fit x {}", x.ty())));
    }
    if matches!(Values::widen(x.data()), Values::Bool(_)) {
        return Err(cx.err(format!("not defined on bool tensors (input {})", x.ty())));
    }
    let out_shape: Vec<usize> = sizes.iter().map(|&s| s as usize).collect();
    cx.numel(&out_shape)?;
    if x.is_empty() && out_shape.iter().product::<usize>() > 0 {
        return Err(cx.err(format!("cannot resize the empty {} to {out_shape:?}", x.ty())));
    }
    let mut shape = x.shape().to_vec();
    let mut v = x.to_f64_vec();
    // One axis at a time: interpolation is separable.
    for a in 0..rank {
        if shape[a] == out_shape[a] && scales[a] == 1.0 {
            continue;
        }
        let (outer, n, inner) = super::outer_axis_inner(&shape, a);
        let m = out_shape[a];
        let taps: Vec<Vec<(usize, f64)>> = (0..m).map(|o| resize_taps(modes, cubic, n, m, scales[a], o)).collect();
        let mut next = vec![0.0; outer * m * inner];
        for o in 0..outer {
            for (j, t) in taps.iter().enumerate() {
                for i in 0..inner {
                    next[(o * m + j) * inner + i] = t.iter().map(|&(k, w)| w * v[(o * n + k) * inner + i]).sum();
                }
            }
        }
        v = next;
        shape[a] = m;
    }
    if !x.dtype().is_float() {
        // Integer results round to the nearest value, as the reference's cast of rounded values does.
        v.iter_mut().for_each(|e| *e = e.round());
    }
    Ok(cx.tensor(shape, crate::TensorData::from_f64(x.dtype(), v).map_err(|e| cx.err(e.to_string()))?))
}
