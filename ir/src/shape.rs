//! Tensor shapes with static, symbolic (`batch`, `seq`, `past`, ...) and unknown (`?`) dimensions.

use std::fmt;
use std::sync::Arc;

/// One dimension of a tensor type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// Known when the graph is built.
    Static(u64),
    /// Named and fixed at run time; two dims with the same name are equal.
    Sym(Arc<str>),
    /// Not known until run time and not related to any other dim (printed `?`).
    Unknown,
}

impl Dim {
    pub fn sym(name: &str) -> Dim {
        Dim::Sym(Arc::from(name))
    }

    pub fn as_static(&self) -> Option<u64> {
        match self {
            Dim::Static(n) => Some(*n),
            _ => None,
        }
    }

    /// Whether a symbol name is valid in the text form: an identifier that is not a number.
    pub fn is_valid_symbol(name: &str) -> bool {
        let mut chars = name.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }
}

impl From<u64> for Dim {
    fn from(n: u64) -> Dim {
        Dim::Static(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Static(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// The dims of a tensor type; rank is always known.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    pub fn of(dims: &[u64]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Static(d)).collect())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// All dims as numbers when every dim is static.
    pub fn as_static(&self) -> Option<Vec<usize>> {
        self.0.iter().map(|d| d.as_static().map(|n| n as usize)).collect()
    }

    /// Number of elements when static.
    pub fn num_elements(&self) -> Option<u64> {
        self.0.iter().try_fold(1u64, |acc, d| d.as_static().and_then(|n| acc.checked_mul(n)))
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// A value's type: element type and shape, printed `f32[batch, seq, 576]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorType {
    pub dtype: crate::DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: crate::DType, shape: Shape) -> TensorType {
        TensorType { dtype, shape }
    }

    pub fn of(dtype: crate::DType, dims: &[u64]) -> TensorType {
        TensorType { dtype, shape: Shape::of(dims) }
    }

    pub fn rank(&self) -> usize {
        self.shape.rank()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}
