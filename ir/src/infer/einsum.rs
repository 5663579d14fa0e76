//! Einsum equations: parsing (with `...` expanded against the operands' ranks) and the result type.

use super::Args;
use crate::{Dim, Shape, TensorType};

/// A parsed equation: each operand's labels and the output's, `...` replaced by labels of their own
/// (upper-case-free private labels from `'0'` upwards).
pub(crate) struct Equation {
    pub inputs: Vec<Vec<char>>,
    pub output: Vec<char>,
}

pub(crate) fn parse(equation: &str, ranks: &[usize]) -> Result<Equation, String> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        return Err(format!("equation `{equation}` has {} operands but {} inputs are given", terms.len(), ranks.len()));
    }
    let mut ellipsis_rank = 0usize;
    let mut inputs = Vec::new();
    for (t, &rank) in terms.iter().zip(ranks) {
        let letters = t.replace("...", "");
        if !letters.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("equation `{equation}`: `{t}` must be letters and at most one `...`"));
        }
        let n = letters.chars().count();
        let has_ellipsis = t.contains("...");
        if (!has_ellipsis && n != rank) || (has_ellipsis && n > rank) {
            return Err(format!("equation `{equation}`: `{t}` does not fit an operand of rank {rank}"));
        }
        let extra = if has_ellipsis { rank - n } else { 0 };
        ellipsis_rank = ellipsis_rank.max(extra);
        let mut labels = Vec::new();
        let (before, after) = t.split_once("...").unwrap_or((t, ""));
        labels.extend(before.chars());
        // Ellipsis dims align at the right, so an operand with fewer takes the last labels.
        labels.extend((0..extra).map(|i| char::from(b'0' + (ellipsis_rank.max(extra) - extra + i) as u8)));
        labels.extend(after.chars());
        if has_ellipsis && t.matches("...").count() > 1 {
            return Err(format!("equation `{equation}`: `{t}` has more than one `...`"));
        }
        inputs.push(labels);
    }
    // Re-label ellipsis dims now that the widest ellipsis is known.
    for (labels, (t, &rank)) in inputs.iter_mut().zip(terms.iter().zip(ranks)) {
        if let Some((before, after)) = t.split_once("...") {
            let extra = rank - before.len() - after.len();
            let mut l: Vec<char> = before.chars().collect();
            l.extend((0..extra).map(|i| char::from(b'0' + (ellipsis_rank - extra + i) as u8)));
            l.extend(after.chars());
            *labels = l;
        }
    }
    let ell: Vec<char> = (0..ellipsis_rank).map(|i| char::from(b'0' + i as u8)).collect();
    let output = match rhs {
        Some(r) => {
            let (before, after) = r.split_once("...").unwrap_or((r, ""));
            let mut o: Vec<char> = before.chars().collect();
            if r.contains("...") {
                o.extend(&ell);
            }
            o.extend(after.chars());
            o
        }
        None => {
            let mut once: Vec<char> = Vec::new();
            for c in inputs.iter().flatten().filter(|c| c.is_ascii_alphabetic()) {
                if inputs.iter().flatten().filter(|d| *d == c).count() == 1 {
                    once.push(*c);
                }
            }
            once.sort();
            let mut o = ell.clone();
            o.extend(once);
            o
        }
    };
    for c in &output {
        if !inputs.iter().flatten().any(|d| d == c) {
            return Err(format!("equation `{equation}`: output label `{c}` appears in no operand"));
        }
    }
    Ok(Equation { inputs, output })
}

/// The size of each label, checking that repeated labels agree (size-1 ellipsis dims broadcast).
pub(crate) fn label_dims(eq: &Equation, shapes: &[&[Dim]]) -> Result<Vec<(char, Dim)>, String> {
    let mut dims: Vec<(char, Dim)> = Vec::new();
    for (labels, shape) in eq.inputs.iter().zip(shapes) {
        for (c, d) in labels.iter().zip(shape.iter()) {
            match dims.iter_mut().find(|(l, _)| l == c) {
                Some((_, known)) => {
                    let merged = super::broadcast_dim(known, d)
                        .filter(|m| c.is_ascii_digit() || super::merge_dims(known, d).is_some() || m == known)
                        .ok_or_else(|| format!("label `{c}` has sizes {known} and {d}"))?;
                    *known = merged;
                }
                None => dims.push((*c, d.clone())),
            }
        }
    }
    Ok(dims)
}

pub(super) fn infer(equation: &str, a: &Args) -> Result<TensorType, String> {
    let first = a.ty(0);
    for i in 1..a.len() {
        if a.ty(i).dtype != first.dtype {
            return Err(format!("all operands must share one dtype, but they are {first} and {}", a.ty(i)));
        }
    }
    if !(first.dtype.is_float() || first.dtype.is_int()) {
        return Err(format!("operands must be numeric, not {first}"));
    }
    let ranks: Vec<usize> = (0..a.len()).map(|i| a.ty(i).rank()).collect();
    let eq = parse(equation, &ranks)?;
    let shapes: Vec<&[Dim]> = (0..a.len()).map(|i| a.ty(i).shape.dims()).collect();
    let dims = label_dims(&eq, &shapes)?;
    let out = eq.output.iter().map(|c| dims.iter().find(|(l, _)| l == c).expect("checked").1.clone()).collect();
    Ok(TensorType::new(first.dtype, Shape(out)))
}
