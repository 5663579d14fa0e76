//! Normalisations: `rms_norm` (with Gemma's weight offset) and `layer_norm` (ONNX LayerNormalization),
//! both accumulating in f32.

use rayon::prelude::*;

/// Rows per parallel task; norms are cheap per row, so tasks batch many rows.
const ROWS_PER_TASK: usize = 16;

/// `y = x · rsqrt(mean(x²) + eps) · (w + offset)` over the last dim of `x`.
pub fn rms_norm(x: &[f32], x_shape: &[usize], w: &[f32], eps: f32, offset: f32) -> Result<Vec<f32>, String> {
    let h = *x_shape.last().ok_or("the input must have at least one dim")?;
    if w.len() != h {
        return Err(format!("the weight has {} elements but the input's last dim is {h}", w.len()));
    }
    let mut out = vec![0.0f32; x.len()];
    if h == 0 {
        return Ok(out);
    }
    let scale: Vec<f32> = w.iter().map(|&wi| wi + offset).collect();
    out.par_chunks_mut(h * ROWS_PER_TASK).zip(x.par_chunks(h * ROWS_PER_TASK)).for_each(|(dst, src)| {
        for (o, xr) in dst.chunks_mut(h).zip(src.chunks(h)) {
            let mean_sq = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
            let r = 1.0 / (mean_sq + eps).sqrt();
            for ((oi, xi), si) in o.iter_mut().zip(xr).zip(&scale) {
                *oi = xi * r * si;
            }
        }
    });
    Ok(out)
}

/// Normalises over dims `axis..` of `x`: `y = (x - mean) / sqrt(var + eps) · w + b`, with the biased
/// variance; `w` and `b` hold one value per normalised element.
pub fn layer_norm(
    x: &[f32],
    x_shape: &[usize],
    axis: i64,
    w: &[f32],
    b: Option<&[f32]>,
    eps: f32,
) -> Result<Vec<f32>, String> {
    let rank = x_shape.len() as i64;
    let a = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&a) {
        return Err(format!("axis {axis} is out of range for an input of rank {rank}"));
    }
    let n: usize = x_shape[a as usize..].iter().product();
    if w.len() != n {
        return Err(format!(
            "the scale has {} elements but the normalised dims {:?} hold {n}",
            w.len(),
            &x_shape[a as usize..]
        ));
    }
    if let Some(b) = b
        && b.len() != n
    {
        return Err(format!(
            "the bias has {} elements but the normalised dims {:?} hold {n}",
            b.len(),
            &x_shape[a as usize..]
        ));
    }
    let mut out = vec![0.0f32; x.len()];
    if n == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(o, xr)| {
        let mean = xr.iter().sum::<f32>() / n as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let r = 1.0 / (var + eps).sqrt();
        for (i, (oi, xi)) in o.iter_mut().zip(xr).enumerate() {
            *oi = (xi - mean) * r * w[i] + b.map_or(0.0, |b| b[i]);
        }
    });
    Ok(out)
}
