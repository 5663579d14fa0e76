//! Attribute values: the typed fields of ops, and a small value tree the text form prints and parses.
//!
//! Ops store attributes as typed Rust fields. [`AttrType`] converts each field type to and from
//! [`Attr`], so the printer and the parser never need to know individual ops.

use std::fmt;

use crate::DType;

/// An attribute value as it appears in the text form.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// A numeric literal as written (`3`, `-1`, `1e-5`, `0.5`, `inf`, `-inf`, `nan`); kept as text so
    /// that each field parses it at its own precision (an f32 is parsed as an f32, never via f64).
    Num(String),
    Bool(bool),
    Str(String),
    /// A bare identifier: enum variants (`half`, `tanh`) and dtypes (`bf16`).
    Ident(String),
    List(Vec<Attr>),
    /// An identifier with arguments, for enum variants that carry data: `llama3(8, 1, 4, 8192)`.
    Call(String, Vec<Attr>),
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, items: &[Attr]) -> fmt::Result {
            for (i, a) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{a}")?;
            }
            Ok(())
        }
        match self {
            Attr::Num(s) | Attr::Ident(s) => f.write_str(s),
            Attr::Bool(b) => write!(f, "{b}"),
            Attr::Str(s) => write!(f, "{s:?}"),
            Attr::List(items) => {
                f.write_str("[")?;
                list(f, items)?;
                f.write_str("]")
            }
            Attr::Call(name, args) => {
                write!(f, "{name}(")?;
                list(f, args)?;
                f.write_str(")")
            }
        }
    }
}

/// A Rust type that can be an op attribute.
pub trait AttrType: Sized {
    fn to_attr(&self) -> Attr;
    /// `Err` holds a short description of what was expected.
    fn from_attr(attr: &Attr) -> Result<Self, String>;
}

fn expected<T>(what: &str, got: &Attr) -> Result<T, String> {
    Err(format!("expected {what}, found `{got}`"))
}

/// Float formatting that round-trips: Rust's `Debug` prints the shortest text that parses back to the
/// same value (`1e-5`, `0.5`, `10000.0`, `inf`, `NaN`).
pub fn format_f32(x: f32) -> String {
    if x.is_nan() { "nan".to_string() } else { format!("{x:?}") }
}

pub fn format_f64(x: f64) -> String {
    if x.is_nan() { "nan".to_string() } else { format!("{x:?}") }
}

pub fn parse_f32(s: &str) -> Option<f32> {
    match s {
        "nan" | "NaN" => Some(f32::NAN),
        _ => s.parse().ok(),
    }
}

pub fn parse_f64(s: &str) -> Option<f64> {
    match s {
        "nan" | "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

impl AttrType for f32 {
    fn to_attr(&self) -> Attr {
        Attr::Num(format_f32(*self))
    }
    fn from_attr(a: &Attr) -> Result<Self, String> {
        match a {
            Attr::Num(s) => parse_f32(s).ok_or_else(|| format!("`{s}` is not an f32")),
            _ => expected("a number", a),
        }
    }
}

impl AttrType for f64 {
    fn to_attr(&self) -> Attr {
        Attr::Num(format_f64(*self))
    }
    fn from_attr(a: &Attr) -> Result<Self, String> {
        match a {
            Attr::Num(s) => parse_f64(s).ok_or_else(|| format!("`{s}` is not an f64")),
            _ => expected("a number", a),
        }
    }
}

macro_rules! int_attr {
    ($($t:ty),*) => {$(
        impl AttrType for $t {
            fn to_attr(&self) -> Attr {
                Attr::Num(self.to_string())
            }
            fn from_attr(a: &Attr) -> Result<Self, String> {
                match a {
                    Attr::Num(s) => s
                        .parse()
                        .map_err(|_| format!("`{s}` is not an integer in the range of {}", stringify!($t))),
                    _ => expected("an integer", a),
                }
            }
        }
    )*};
}
int_attr!(i64, u32, u64);

impl AttrType for bool {
    fn to_attr(&self) -> Attr {
        Attr::Bool(*self)
    }
    fn from_attr(a: &Attr) -> Result<Self, String> {
        match a {
            Attr::Bool(b) => Ok(*b),
            _ => expected("`true` or `false`", a),
        }
    }
}

impl AttrType for String {
    fn to_attr(&self) -> Attr {
        Attr::Str(self.clone())
    }
    fn from_attr(a: &Attr) -> Result<Self, String> {
        match a {
            Attr::Str(s) => Ok(s.clone()),
            _ => expected("a string", a),
        }
    }
}

impl AttrType for DType {
    fn to_attr(&self) -> Attr {
        Attr::Ident(self.to_string())
    }
    fn from_attr(a: &Attr) -> Result<Self, String> {
        match a {
            Attr::Ident(s) => s.parse().map_err(|e: crate::dtype::UnknownDType| e.to_string()),
            _ => expected("a dtype", a),
        }
    }
}

impl<T: AttrType> AttrType for Vec<T> {
    fn to_attr(&self) -> Attr {
        Attr::List(self.iter().map(T::to_attr).collect())
    }
    fn from_attr(a: &Attr) -> Result<Self, String> {
        match a {
            Attr::List(items) => items.iter().map(T::from_attr).collect(),
            _ => expected("a list `[...]`", a),
        }
    }
}

/// Declares a fieldless enum usable as an attribute, printed as a bare identifier.
#[macro_export]
macro_rules! ident_attr_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn from_name(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl $crate::attr::AttrType for $name {
            fn to_attr(&self) -> $crate::attr::Attr {
                $crate::attr::Attr::Ident(self.name().to_string())
            }
            fn from_attr(a: &$crate::attr::Attr) -> Result<Self, String> {
                let names = || [$($text),+].join(", ");
                match a {
                    $crate::attr::Attr::Ident(s) => $name::from_name(s)
                        .ok_or_else(|| format!("unknown {} `{s}` (expected one of {})", stringify!($name), names())),
                    _ => Err(format!("expected one of {}, found `{a}`", names())),
                }
            }
        }
    };
}

ident_attr_enum! {
    /// How rotary embedding pairs up the elements of a head.
    pub enum RopeStyle {
        /// Element i rotates with element i + rotary_dim/2 (Llama, Qwen, Gemma, GPT-NeoX in HF layout).
        Half = "half",
        /// Element 2i rotates with element 2i+1 (GPT-J, original Meta Llama checkpoints).
        Interleaved = "interleaved",
    }
}

ident_attr_enum! {
    /// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`) or the exact erf form.
    pub enum GeluApprox {
        None = "none",
        Tanh = "tanh",
    }
}

/// Frequency scaling of rotary embeddings for long context, as real checkpoints configure it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (Gemma 3 global layers, "linear" in HF configs).
    Linear {
        factor: f64,
    },
    /// Llama 3.1's piecewise rescaling of frequencies by wavelength.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: u64,
    },
    /// YaRN: NTK-by-parts interpolation and a magnitude factor on cos/sin (Qwen long context).
    Yarn {
        factor: f64,
        original_max_position: u64,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
    },
}

impl AttrType for RopeScaling {
    fn to_attr(&self) -> Attr {
        match *self {
            RopeScaling::None => Attr::Ident("none".into()),
            RopeScaling::Linear { factor } => Attr::Call("linear".into(), vec![factor.to_attr()]),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => Attr::Call(
                "llama3".into(),
                vec![
                    factor.to_attr(),
                    low_freq_factor.to_attr(),
                    high_freq_factor.to_attr(),
                    original_max_position.to_attr(),
                ],
            ),
            RopeScaling::Yarn { factor, original_max_position, beta_fast, beta_slow, attention_factor } => Attr::Call(
                "yarn".into(),
                vec![
                    factor.to_attr(),
                    original_max_position.to_attr(),
                    beta_fast.to_attr(),
                    beta_slow.to_attr(),
                    attention_factor.to_attr(),
                ],
            ),
        }
    }

    fn from_attr(a: &Attr) -> Result<Self, String> {
        const FORMS: &str = "none, linear(factor), llama3(factor, low_freq_factor, high_freq_factor, \
                             original_max_position), yarn(factor, original_max_position, beta_fast, beta_slow, \
                             attention_factor)";
        match a {
            Attr::Ident(s) if s == "none" => Ok(RopeScaling::None),
            Attr::Call(name, args) => match (name.as_str(), args.as_slice()) {
                ("linear", [f]) => Ok(RopeScaling::Linear { factor: f64::from_attr(f)? }),
                ("llama3", [f, lo, hi, orig]) => Ok(RopeScaling::Llama3 {
                    factor: f64::from_attr(f)?,
                    low_freq_factor: f64::from_attr(lo)?,
                    high_freq_factor: f64::from_attr(hi)?,
                    original_max_position: u64::from_attr(orig)?,
                }),
                ("yarn", [f, orig, bf, bs, af]) => Ok(RopeScaling::Yarn {
                    factor: f64::from_attr(f)?,
                    original_max_position: u64::from_attr(orig)?,
                    beta_fast: f64::from_attr(bf)?,
                    beta_slow: f64::from_attr(bs)?,
                    attention_factor: f64::from_attr(af)?,
                }),
                _ => Err(format!("unknown rope scaling `{a}` (expected one of {FORMS})")),
            },
            _ => Err(format!("expected rope scaling, one of {FORMS}; found `{a}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_at_their_own_precision() {
        for x in [1e-5f32, 1e-6, 0.1, 10000.0, 1.0 / 3.0, f32::MIN_POSITIVE, f32::MAX, f32::INFINITY, -0.0] {
            let a = x.to_attr();
            assert_eq!(f32::from_attr(&a).unwrap().to_bits(), x.to_bits(), "{a}");
        }
        assert!(f32::from_attr(&f32::NAN.to_attr()).unwrap().is_nan());
    }

    #[test]
    fn scaling_round_trips() {
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192,
        };
        assert_eq!(s.to_attr().to_string(), "llama3(8.0, 1.0, 4.0, 8192)");
        assert_eq!(RopeScaling::from_attr(&s.to_attr()).unwrap(), s);
        assert!(RopeScaling::from_attr(&Attr::Call("linear".into(), vec![])).is_err());
    }
}
