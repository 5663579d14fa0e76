//! Low-bit element types — ONNX's four 8-bit floats, the E8M0 scale format, the 4-bit float E2M1 and
//! the 4- and 2-bit integers — and the exact conversions between their bit codes and f64.
//!
//! Layout: in memory every element takes one byte that holds its format's bit code in the low bits
//! (4- and 2-bit types are unpacked, one code a byte). One byte an element keeps indexing, gathering and
//! every data-movement op identical to `u8`'s; packing two or four codes into a byte is a file-format
//! concern (ONNX `raw_data`), which the importer undoes. All ten formats share one [`TensorData`] variant
//! that carries the format, so data movement is written once for all of them, while the format is part
//! of the dtype ([`DType::LowBit`]) so that types, passes and backends see it. These types are
//! storage-only: kiln holds, moves, compares by value and casts them, but computes on none of them
//! (every other op refuses them, naming the op and the dtype).
//!
//! Conversions follow the ONNX `Cast` spec (opset 25): floats round to nearest, ties to even, from the
//! exact f64 value (f32/f16/bf16 widen to f64 exactly, so there is one rounding). With `saturate` (the
//! default) a finite value beyond the largest finite value, and an infinity, becomes that largest value;
//! without it E4M3FN gives NaN, E5M2 gives infinity, and the FNUZ formats give their single NaN 0x80.
//! FNUZ formats have no negative zero (a result of -0 is +0). E2M1 has neither NaN nor infinity and
//! always saturates; a NaN becomes a zero (of the opposite sign bit, as ml_dtypes — which produced the
//! ONNX test data — does). E8M0 (a bare power of two, code 0xFF NaN) rounds by `round_mode`; its sign is
//! dropped (the spec leaves negative inputs undefined; the reference implementation reads only the
//! exponent), and where the spec's table and the reference differ (an infinity with `saturate`) the
//! spec's table is followed. Integers from floats truncate toward zero and keep the low bits (ml_dtypes'
//! `astype`, which the ONNX reference and its test data use); NaN and infinities give 0. Integers from
//! integers keep the low bits, like every narrowing integer cast.
//!
//! [`TensorData`]: crate::TensorData
//! [`DType::LowBit`]: crate::DType::LowBit

use std::fmt;

use crate::ident_attr_enum;

/// A low-bit element type (see the module docs for the layout and conversions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LowBitType {
    /// 8-bit float, 4 exponent bits (bias 7), 3 mantissa bits; no infinity, NaN `S.1111.111`; max 448.
    F8E4M3FN,
    /// 8-bit float, bias 8, no infinity, no negative zero, one NaN 0x80; max 240.
    F8E4M3FNUZ,
    /// 8-bit float, 5 exponent bits (bias 15), 2 mantissa bits, IEEE-like infinities and NaNs; max 57344.
    F8E5M2,
    /// 8-bit float, bias 16, no infinity, no negative zero, one NaN 0x80; max 57344.
    F8E5M2FNUZ,
    /// 8-bit unsigned power of two `2^(code - 127)`, code 0xFF NaN (the OCP MX scale format).
    F8E8M0,
    /// 4-bit float, 2 exponent bits (bias 1), 1 mantissa bit: ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}.
    F4E2M1,
    /// Signed 4-bit integer, -8..=7.
    I4,
    /// Unsigned 4-bit integer, 0..=15.
    U4,
    /// Signed 2-bit integer, -2..=1.
    I2,
    /// Unsigned 2-bit integer, 0..=3.
    U2,
}

ident_attr_enum! {
    /// How a cast to E8M0 rounds a value that is not a power of two (ONNX Cast `round_mode`).
    pub enum E8m0Rounding {
        /// Away from zero: the next power of two up (ONNX's default).
        Up = "up",
        /// Toward zero: the power of two below.
        Down = "down",
        /// To the nearer power of two by value, ties (1.5 · 2^k) up.
        Nearest = "nearest",
    }
}

/// The attributes of a cast that matter for low-bit float targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowBitCast {
    /// Out-of-range values clamp to the largest finite value (else NaN or infinity, by format).
    pub saturate: bool,
    /// Rounding of casts to E8M0.
    pub round_mode: E8m0Rounding,
}

impl Default for LowBitCast {
    fn default() -> Self {
        LowBitCast { saturate: true, round_mode: E8m0Rounding::Up }
    }
}

/// How a small float format spends its special codes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Specials {
    /// No infinity; the all-ones code (either sign) is NaN (E4M3FN).
    Fn,
    /// IEEE: all-ones exponent with zero mantissa is infinity, else NaN (E5M2).
    Ieee,
    /// No infinity, no negative zero; 0x80 is the one NaN (the FNUZ formats).
    Fnuz,
    /// No NaN and no infinity (E2M1).
    Finite,
}

/// A sign-exponent-mantissa float format of at most 8 bits.
#[derive(Clone, Copy)]
struct MiniFloat {
    exp_bits: u32,
    man_bits: u32,
    bias: i32,
    specials: Specials,
}

impl MiniFloat {
    fn sign_bit(self) -> u8 {
        1 << (self.exp_bits + self.man_bits)
    }

    fn exp_all_ones(self) -> u8 {
        ((1u32 << self.exp_bits) - 1) as u8
    }

    fn man_all_ones(self) -> u8 {
        ((1u32 << self.man_bits) - 1) as u8
    }

    /// The code of the largest finite value (positive).
    fn max_code(self) -> u8 {
        let (e, m) = (self.exp_all_ones(), self.man_all_ones());
        match self.specials {
            Specials::Fn => (e << self.man_bits) | (m - 1),
            Specials::Ieee => ((e - 1) << self.man_bits) | m,
            Specials::Fnuz | Specials::Finite => (e << self.man_bits) | m,
        }
    }

    /// The smallest normal exponent.
    fn emin(self) -> i32 {
        1 - self.bias
    }

    fn decode(self, code: u8) -> f64 {
        let code = code & (self.sign_bit() | (self.sign_bit() - 1));
        let negative = code & self.sign_bit() != 0;
        let e = (code >> self.man_bits) & self.exp_all_ones();
        let m = code & self.man_all_ones();
        match self.specials {
            Specials::Fnuz if code == 0x80 => return f64::NAN,
            Specials::Fn if e == self.exp_all_ones() && m == self.man_all_ones() => return f64::NAN,
            Specials::Ieee if e == self.exp_all_ones() => {
                let v = if m == 0 { f64::INFINITY } else { f64::NAN };
                return if negative { -v } else { v };
            }
            _ => {}
        }
        let magnitude = if e == 0 {
            f64::from(m) * pow2(self.emin() - self.man_bits as i32)
        } else {
            f64::from((1u32 << self.man_bits) | u32::from(m)) * pow2(i32::from(e) - self.bias - self.man_bits as i32)
        };
        if negative { -magnitude } else { magnitude }
    }

    fn encode(self, x: f64, saturate: bool) -> u8 {
        let sign = if x.is_sign_negative() { self.sign_bit() } else { 0 };
        if x.is_nan() {
            return match self.specials {
                Specials::Fn | Specials::Ieee => sign | (self.sign_bit() - 1),
                Specials::Fnuz => 0x80,
                // ml_dtypes' choice, which the ONNX test data records: the zero of the other sign.
                Specials::Finite => sign ^ self.sign_bit(),
            };
        }
        let a = x.abs();
        let max = self.decode(self.max_code());
        let rounded = if a.is_infinite() {
            f64::INFINITY
        } else {
            // The spacing of representable values around `a`: subnormals share the smallest normal's.
            let k = exponent_of(a).max(self.emin());
            let ulp = pow2(k - self.man_bits as i32);
            (a / ulp).round_ties_even() * ulp
        };
        if rounded > max {
            if saturate || self.specials == Specials::Finite {
                return sign | self.max_code();
            }
            return match self.specials {
                Specials::Fn => sign | (self.sign_bit() - 1),
                Specials::Ieee => sign | (self.exp_all_ones() << self.man_bits),
                Specials::Fnuz => 0x80,
                Specials::Finite => unreachable!("E2M1 always saturates (handled above)"),
            };
        }
        if rounded == 0.0 {
            return if self.specials == Specials::Fnuz { 0 } else { sign };
        }
        let magnitude = if rounded >= pow2(self.emin()) {
            let e = exponent_of(rounded);
            let m = rounded / pow2(e - self.man_bits as i32) - f64::from(1u32 << self.man_bits);
            (((e + self.bias) as u8) << self.man_bits) | m as u8
        } else {
            (rounded / pow2(self.emin() - self.man_bits as i32)) as u8
        };
        sign | magnitude
    }
}

/// `2^k` exactly, for `k` in f64's normal range.
fn pow2(k: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&k), "2^{k} is outside f64's normal range");
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// `floor(log2(a))` for a finite `a > 0`, exactly (from the bits, never through `log2`).
fn exponent_of(a: f64) -> i32 {
    let biased = ((a.to_bits() >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: the value is mantissa · 2^-1074.
        let mantissa = a.to_bits() & ((1 << 52) - 1);
        63 - mantissa.leading_zeros() as i32 - 1074
    } else {
        biased - 1023
    }
}

impl LowBitType {
    pub const ALL: [LowBitType; 10] = [
        LowBitType::F8E4M3FN,
        LowBitType::F8E4M3FNUZ,
        LowBitType::F8E5M2,
        LowBitType::F8E5M2FNUZ,
        LowBitType::F8E8M0,
        LowBitType::F4E2M1,
        LowBitType::I4,
        LowBitType::U4,
        LowBitType::I2,
        LowBitType::U2,
    ];

    /// The name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            LowBitType::F8E4M3FN => "f8e4m3fn",
            LowBitType::F8E4M3FNUZ => "f8e4m3fnuz",
            LowBitType::F8E5M2 => "f8e5m2",
            LowBitType::F8E5M2FNUZ => "f8e5m2fnuz",
            LowBitType::F8E8M0 => "f8e8m0",
            LowBitType::F4E2M1 => "f4e2m1",
            LowBitType::I4 => "i4",
            LowBitType::U4 => "u4",
            LowBitType::I2 => "i2",
            LowBitType::U2 => "u2",
        }
    }

    pub fn from_name(s: &str) -> Option<LowBitType> {
        LowBitType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Bits of one element in packed form (8, 4 or 2).
    pub fn bits(self) -> u32 {
        match self {
            LowBitType::F8E4M3FN
            | LowBitType::F8E4M3FNUZ
            | LowBitType::F8E5M2
            | LowBitType::F8E5M2FNUZ
            | LowBitType::F8E8M0 => 8,
            LowBitType::F4E2M1 | LowBitType::I4 | LowBitType::U4 => 4,
            LowBitType::I2 | LowBitType::U2 => 2,
        }
    }

    /// Whether the codes are integers (else floats).
    pub fn is_int(self) -> bool {
        matches!(self, LowBitType::I4 | LowBitType::U4 | LowBitType::I2 | LowBitType::U2)
    }

    fn minifloat(self) -> Option<MiniFloat> {
        let f = |exp_bits, man_bits, bias, specials| Some(MiniFloat { exp_bits, man_bits, bias, specials });
        match self {
            LowBitType::F8E4M3FN => f(4, 3, 7, Specials::Fn),
            LowBitType::F8E4M3FNUZ => f(4, 3, 8, Specials::Fnuz),
            LowBitType::F8E5M2 => f(5, 2, 15, Specials::Ieee),
            LowBitType::F8E5M2FNUZ => f(5, 2, 16, Specials::Fnuz),
            LowBitType::F4E2M1 => f(2, 1, 1, Specials::Finite),
            _ => None,
        }
    }

    /// The mask of a code's meaningful bits.
    fn mask(self) -> u8 {
        ((1u32 << self.bits()) - 1) as u8
    }

    /// The integer value of a code of an integer format (signed formats sign-extend); `None` for floats.
    pub fn int_value(self, code: u8) -> Option<i64> {
        let code = i64::from(code & self.mask());
        match self {
            LowBitType::U4 | LowBitType::U2 => Some(code),
            LowBitType::I4 | LowBitType::I2 => {
                let half = 1i64 << (self.bits() - 1);
                Some(if code >= half { code - 2 * half } else { code })
            }
            _ => None,
        }
    }

    /// The exact value of a code.
    pub fn to_f64(self, code: u8) -> f64 {
        if let Some(i) = self.int_value(code) {
            return i as f64;
        }
        match self.minifloat() {
            Some(f) => f.decode(code),
            None if code == 0xFF => f64::NAN,
            None => pow2(i32::from(code) - 127),
        }
    }

    /// The code of `x` under the cast attributes `how` (see the module docs).
    pub fn from_f64(self, x: f64, how: LowBitCast) -> u8 {
        if self.is_int() {
            if !x.is_finite() {
                return 0;
            }
            // The truncated value modulo 2^bits, exactly (rem_euclid of an integral f64 is exact).
            return x.trunc().rem_euclid(f64::from(1u32 << self.bits())) as u8;
        }
        match self.minifloat() {
            Some(f) => f.encode(x, how.saturate),
            None => e8m0_from_f64(x, how),
        }
    }

    /// The code of the integer `x`: the low bits for integer formats, the rounded value for floats.
    pub fn from_i64(self, x: i64) -> u8 {
        if self.is_int() { (x as u8) & self.mask() } else { self.from_f64(x as f64, LowBitCast::default()) }
    }
}

/// E8M0 from a value: the power of two `round_mode` picks, out-of-range and zero values clamped (with
/// `saturate`) or NaN.
fn e8m0_from_f64(x: f64, how: LowBitCast) -> u8 {
    const NAN: u8 = 0xFF;
    const MAX: u8 = 0xFE;
    if x.is_nan() {
        return NAN;
    }
    let a = x.abs();
    let out_of_range = |high: bool| match (how.saturate, high) {
        (false, _) => NAN,
        (true, true) => MAX,
        (true, false) => 0,
    };
    if a.is_infinite() {
        return out_of_range(true);
    }
    if a == 0.0 {
        return out_of_range(false);
    }
    let k = exponent_of(a);
    // a = 2^k · f with f in [1, 2); f64 holds f exactly only for normal a, but subnormal a is far below
    // E8M0's range, where only "is it above 1" matters, which stays exact.
    let fraction = if k >= -1022 { a / pow2(k) } else { 1.5 };
    let e = k + match how.round_mode {
        E8m0Rounding::Down => 0,
        E8m0Rounding::Up => i32::from(fraction > 1.0),
        E8m0Rounding::Nearest => i32::from(fraction >= 1.5),
    };
    if e > 127 {
        out_of_range(true)
    } else if e < -127 {
        out_of_range(false)
    } else {
        (e + 127) as u8
    }
}

impl fmt::Display for LowBitType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
