//! Element types of IR values, including quantized weight formats.
//!
//! Quantized formats are dtypes so that a `linear` whose weight is quantized is still one `linear`, and
//! every pass and backend sees the storage format in the type. Their memory layout is defined in
//! [`crate::quant`].

use std::fmt;
use std::str::FromStr;

/// The element type of a tensor value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    U16,
    U32,
    U64,
    Bool,
    /// 8-bit signed weights with one f32 scale per output channel (row): `w[n,k] = q[n,k] * scale[n]`.
    Q8C,
    /// 4-bit weights quantized in groups of `group_size` consecutive elements of a row, one f32 scale per
    /// group. Without zero points `w = (q - 8) * scale`; with them `w = (q - zero) * scale`, the zero
    /// point being an f32 per group (so GGUF's float minimum maps onto it).
    Q4G {
        group_size: u32,
        zero_points: bool,
    },
}

impl DType {
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// Integers of any width, signed or unsigned (not bool).
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U8 | DType::U16 | DType::U32 | DType::U64
        )
    }

    pub fn is_unsigned(self) -> bool {
        matches!(self, DType::U8 | DType::U16 | DType::U32 | DType::U64)
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Q8C | DType::Q4G { .. })
    }

    /// Types a `linear`, `embedding` or `logits` weight may have: any float or quantized format.
    pub fn is_weight_like(self) -> bool {
        self.is_float() || self.is_quantized()
    }

    /// Bytes per element for plain (non-quantized) dtypes.
    pub fn size_of(self) -> Option<usize> {
        Some(match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::Q8C | DType::Q4G { .. } => return None,
        })
    }

    /// Every plain (non-quantized) dtype, for tables and property tests.
    pub const PLAIN: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
    ];
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DType::F32 => f.write_str("f32"),
            DType::F16 => f.write_str("f16"),
            DType::BF16 => f.write_str("bf16"),
            DType::F64 => f.write_str("f64"),
            DType::I64 => f.write_str("i64"),
            DType::I32 => f.write_str("i32"),
            DType::I16 => f.write_str("i16"),
            DType::I8 => f.write_str("i8"),
            DType::U8 => f.write_str("u8"),
            DType::U16 => f.write_str("u16"),
            DType::U32 => f.write_str("u32"),
            DType::U64 => f.write_str("u64"),
            DType::Bool => f.write_str("bool"),
            DType::Q8C => f.write_str("q8c"),
            DType::Q4G { group_size, zero_points } => {
                write!(f, "q4g{group_size}{}", if *zero_points { "z" } else { "" })
            }
        }
    }
}

/// Error for a dtype name that is not one of kiln's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown dtype `{0}` (expected one of f32, f16, bf16, f64, i64, i32, i16, i8, u8, u16, u32, u64, bool, q8c, q4g<group>, q4g<group>z)"
)]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            "f64" => DType::F64,
            "i64" => DType::I64,
            "i32" => DType::I32,
            "i16" => DType::I16,
            "i8" => DType::I8,
            "u8" => DType::U8,
            "u16" => DType::U16,
            "u32" => DType::U32,
            "u64" => DType::U64,
            "bool" => DType::Bool,
            "q8c" => DType::Q8C,
            _ => {
                let rest = s.strip_prefix("q4g").ok_or_else(|| UnknownDType(s.to_string()))?;
                let (digits, zero_points) = match rest.strip_suffix('z') {
                    Some(d) => (d, true),
                    None => (rest, false),
                };
                let group_size: u32 = digits
                    .parse()
                    .ok()
                    .filter(|g| *g >= 2 && g % 2 == 0 && digits.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| UnknownDType(s.to_string()))?;
                DType::Q4G { group_size, zero_points }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let mut all = DType::PLAIN.to_vec();
        all.extend([
            DType::Q8C,
            DType::Q4G { group_size: 128, zero_points: false },
            DType::Q4G { group_size: 32, zero_points: true },
        ]);
        for d in all {
            assert_eq!(d.to_string().parse::<DType>().unwrap(), d);
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        for s in ["f8", "q4g", "q4g0", "q4g3", "q4g+8", "q4gz", "Q8C"] {
            assert!(s.parse::<DType>().is_err(), "{s}");
        }
    }
}
