//! Element types of IR values, including quantized weight formats.
//!
//! Quantized formats are dtypes so that a `linear` whose weight is quantized is still one `linear`, and
//! every pass and backend sees the storage format in the type. Their memory layout is defined in
//! [`crate::quant`].
//!
//! The low-bit types ([`LowBitType`]: 8- and 4-bit floats, E8M0, 4- and 2-bit integers) and strings are
//! storage-only: values of these types can be held, moved, compared for equality and cast, but no
//! arithmetic is defined on them (see [`DType::is_storage_only`]).

use std::fmt;
use std::str::FromStr;

use crate::lowbit::LowBitType;

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
    /// A low-bit float or integer, one code a byte in memory (see [`crate::lowbit`]).
    LowBit(LowBitType),
    /// UTF-8 strings (ONNX `STRING`): held, moved and compared for equality only.
    Str,
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

    /// Types kiln holds, moves, compares for equality and casts but computes nothing on: the low-bit
    /// formats and strings. Every op but those refuses them with an error naming the op and the dtype.
    pub fn is_storage_only(self) -> bool {
        matches!(self, DType::LowBit(_) | DType::Str)
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Q8C | DType::Q4G { .. })
    }

    /// Types a `linear`, `embedding` or `logits` weight may have: any float or quantized format.
    pub fn is_weight_like(self) -> bool {
        self.is_float() || self.is_quantized()
    }

    /// Bytes per element in memory for plain (non-quantized) dtypes; low-bit types take one byte (their
    /// code, unpacked); strings have no fixed size.
    pub fn size_of(self) -> Option<usize> {
        Some(match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool | DType::LowBit(_) => 1,
            DType::Q8C | DType::Q4G { .. } | DType::Str => return None,
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

    /// Every storage-only dtype (see [`DType::is_storage_only`]).
    pub const STORAGE_ONLY: [DType; 11] = [
        DType::LowBit(LowBitType::F8E4M3FN),
        DType::LowBit(LowBitType::F8E4M3FNUZ),
        DType::LowBit(LowBitType::F8E5M2),
        DType::LowBit(LowBitType::F8E5M2FNUZ),
        DType::LowBit(LowBitType::F8E8M0),
        DType::LowBit(LowBitType::F4E2M1),
        DType::LowBit(LowBitType::I4),
        DType::LowBit(LowBitType::U4),
        DType::LowBit(LowBitType::I2),
        DType::LowBit(LowBitType::U2),
        DType::Str,
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
            DType::LowBit(t) => f.write_str(t.name()),
            DType::Str => f.write_str("str"),
        }
    }
}

/// Error for a dtype name that is not one of kiln's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown dtype `{0}` (expected one of f32, f16, bf16, f64, i64, i32, i16, i8, u8, u16, u32, u64, bool, q8c, q4g<group>, q4g<group>z, f8e4m3fn, f8e4m3fnuz, f8e5m2, f8e5m2fnuz, f8e8m0, f4e2m1, i4, u4, i2, u2, str)"
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
            "str" => DType::Str,
            _ => {
                if let Some(t) = LowBitType::from_name(s) {
                    return Ok(DType::LowBit(t));
                }
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
        all.extend(DType::STORAGE_ONLY);
        for d in all {
            assert_eq!(d.to_string().parse::<DType>().unwrap(), d);
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        for s in ["f8", "q4g", "q4g0", "q4g3", "q4g+8", "q4gz", "Q8C", "f8e4m3", "i3", "string"] {
            assert!(s.parse::<DType>().is_err(), "{s}");
        }
    }
}
