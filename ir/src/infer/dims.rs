//! Dim algebra shared by every type rule: compatibility, merging, numpy broadcasting, axis
//! normalisation, and symbolic products (for `reshape`'s `-1`).
//!
//! A [`Dim::Unknown`] is compatible with anything. Two symbols with the same name are equal; two
//! different symbols may or may not be equal at run time, so they are compatible only through `?`.

use std::sync::Arc;

use crate::{Dim, Shape};

/// Whether two dims may describe the same run-time size: equal, or either unknown.
pub fn dims_compatible(a: &Dim, b: &Dim) -> bool {
    a == b || *a == Dim::Unknown || *b == Dim::Unknown
}

/// The more precise of two compatible dims, or `None` when they are incompatible.
pub fn merge_dims(a: &Dim, b: &Dim) -> Option<Dim> {
    match (a, b) {
        (Dim::Unknown, other) | (other, Dim::Unknown) => Some(other.clone()),
        _ if a == b => Some(a.clone()),
        _ => None,
    }
}

/// Whether two shapes have the same rank and pairwise compatible dims.
pub fn shapes_compatible(a: &Shape, b: &Shape) -> bool {
    a.rank() == b.rank() && a.dims().iter().zip(b.dims()).all(|(x, y)| dims_compatible(x, y))
}

/// Numpy broadcasting of one pair of aligned dims; `None` when two different static sizes, neither
/// of them 1, meet.
///
/// A static size `n != 1` against a symbol or `?` gives `n`: the other side must be 1 or `n` in any
/// valid execution, and either way the result is `n`. Differing symbols, or `?` against a symbol, give
/// `?` because either side may be the 1 that broadcasts.
pub fn broadcast_dim(a: &Dim, b: &Dim) -> Option<Dim> {
    match (a, b) {
        _ if a == b => Some(a.clone()),
        (Dim::Static(1), other) | (other, Dim::Static(1)) => Some(other.clone()),
        (Dim::Static(_), Dim::Static(_)) => None,
        (Dim::Static(n), _) | (_, Dim::Static(n)) => Some(Dim::Static(*n)),
        _ => Some(Dim::Unknown),
    }
}

/// Numpy broadcasting of two shapes (aligned at the trailing dim). The error names the clashing dims.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        // Index from the end; a missing leading dim behaves as 1.
        let one = Dim::Static(1);
        let da = if i + a.rank() >= rank { &a.dims()[i + a.rank() - rank] } else { &one };
        let db = if i + b.rank() >= rank { &b.dims()[i + b.rank() - rank] } else { &one };
        match broadcast_dim(da, db) {
            Some(d) => out.push(d),
            None => {
                return Err(format!(
                    "shapes {a} and {b} cannot be broadcast: dim {da} does not match dim {db} ({} from the end)",
                    ordinal(rank - i)
                ));
            }
        }
    }
    Ok(Shape(out))
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A possibly negative axis resolved against `rank` (valid: `-rank..rank`).
pub fn normalize_axis(axis: i64, rank: usize, what: &str) -> Result<usize, String> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        if rank == 0 {
            return Err(format!("{what} {axis} is out of range: the tensor has rank 0, so it has no axes"));
        }
        return Err(format!("{what} {axis} is out of range for rank {rank} (valid: {}..={})", -r, r - 1));
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

/// Normalises a list of axes against `rank`, rejecting duplicates (after normalisation).
pub fn normalize_axes(axes: &[i64], rank: usize, what: &str) -> Result<Vec<usize>, String> {
    let mut out: Vec<usize> = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(a, rank, what)?;
        if out.contains(&n) {
            return Err(format!("the axes {axes:?} name axis {n} twice"));
        }
        out.push(n);
    }
    Ok(out)
}

/// The product of some dims as `coeff * sym_1 * ... * sym_n`, or unknown when a `?` took part (or the
/// static part overflowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimProduct {
    pub coeff: u128,
    /// Symbol names, sorted, with repetition.
    pub syms: Vec<Arc<str>>,
    pub unknown: bool,
}

impl DimProduct {
    pub fn of(dims: &[Dim]) -> DimProduct {
        let mut p = DimProduct { coeff: 1, syms: Vec::new(), unknown: false };
        for d in dims {
            match d {
                Dim::Static(n) => match p.coeff.checked_mul(*n as u128) {
                    Some(c) => p.coeff = c,
                    None => p.unknown = true,
                },
                Dim::Sym(s) => p.syms.push(s.clone()),
                Dim::Unknown => p.unknown = true,
            }
        }
        p.syms.sort();
        p
    }

    /// `self / other` when it is a known dim: a static quotient, or a single symbol left over with
    /// quotient 1, else `?`. `None` when both are fully static (after cancelling equal symbols) and do not
    /// divide.
    pub fn divide(&self, other: &DimProduct) -> Option<Dim> {
        if self.unknown || other.unknown || other.coeff == 0 {
            return Some(Dim::Unknown);
        }
        let mut rest = self.syms.clone();
        for s in &other.syms {
            match rest.iter().position(|r| r == s) {
                Some(i) => {
                    rest.remove(i);
                }
                None => return Some(Dim::Unknown),
            }
        }
        if !self.coeff.is_multiple_of(other.coeff) {
            return if rest.is_empty() { None } else { Some(Dim::Unknown) };
        }
        let q = self.coeff / other.coeff;
        match (rest.as_slice(), q) {
            ([], q) => Some(u64::try_from(q).map_or(Dim::Unknown, Dim::Static)),
            ([s], 1) => Some(Dim::Sym(s.clone())),
            _ => Some(Dim::Unknown),
        }
    }

    /// Whether the two products certainly differ (same symbols, different static factors). Products
    /// with `?` or different symbols may be equal at run time.
    pub fn certainly_differs(&self, other: &DimProduct) -> bool {
        !self.unknown && !other.unknown && self.syms == other.syms && self.coeff != other.coeff
    }
}

impl std::fmt::Display for DimProduct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unknown {
            return f.write_str("an unknown number of");
        }
        let mut parts: Vec<String> = Vec::new();
        if self.coeff != 1 || self.syms.is_empty() {
            parts.push(self.coeff.to_string());
        }
        parts.extend(self.syms.iter().map(|s| s.to_string()));
        f.write_str(&parts.join("*"))
    }
}
