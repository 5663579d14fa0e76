//! The closed set of operations, with their attributes and arities.
//!
//! Two levels live side by side: model-level ops that carry LLM meaning (`attention`, `rope`,
//! `rms_norm`, ...) and generic tensor ops for ONNX graphs. `define_ops!` generates, from one table,
//! the enum, the op names of the text form, attribute conversion and input arity, so adding an op is one
//! line here plus its type rule (`infer`) and its semantics (`eval` / the executors).

use std::collections::BTreeMap;

use crate::attr::{Attr, AttrType, GeluApprox, RopeScaling, RopeStyle};
use crate::lowbit::{E8m0Rounding, LowBitCast};
use crate::{DType, Tensor, ident_attr_enum};

ident_attr_enum! {
    /// Elementwise functions of one operand.
    pub enum UnaryOp {
        Neg = "neg", Abs = "abs", Exp = "exp", Log = "log", Sqrt = "sqrt", Rsqrt = "rsqrt",
        Reciprocal = "reciprocal", Sin = "sin", Cos = "cos", Tanh = "tanh", Sigmoid = "sigmoid",
        Erf = "erf", Floor = "floor", Ceil = "ceil", Round = "round", Relu = "relu", Sign = "sign",
        Tan = "tan", Asin = "asin", Acos = "acos", Atan = "atan", Sinh = "sinh", Cosh = "cosh", Asinh = "asinh",
        Acosh = "acosh", Atanh = "atanh",
        /// Bitwise complement of an integer tensor.
        BitNot = "bit_not",
        /// Logical negation of a bool tensor.
        Not = "not",
        /// Bool result.
        IsNan = "isnan",
        /// Bool result.
        IsInf = "isinf",
    }
}

ident_attr_enum! {
    /// Elementwise functions of two operands with numpy broadcasting; both operands share one dtype.
    pub enum BinaryOp {
        Add = "add", Sub = "sub", Mul = "mul", Div = "div", Pow = "pow", Max = "max", Min = "min",
        /// Remainder with the sign of the divisor for integers (ONNX `Mod`, fmod = 0), C fmod for floats.
        Mod = "mod",
        /// Logical ops on bool tensors.
        And = "and", Or = "or", Xor = "xor",
        /// Bitwise ops on integer tensors (two's complement at the storage width).
        BitAnd = "bit_and", BitOr = "bit_or", BitXor = "bit_xor",
        /// Shifts of integer tensors by the second operand; a shift count outside `0..width` gives 0
        /// (or -1 for a right shift of a negative number), as ONNX BitShift defines.
        ShiftLeft = "shift_left", ShiftRight = "shift_right",
    }
}

ident_attr_enum! {
    /// Elementwise comparisons with numpy broadcasting; the result is bool.
    pub enum CompareOp {
        Equal = "equal", Less = "less", LessEqual = "less_equal", Greater = "greater", GreaterEqual = "greater_equal",
    }
}

ident_attr_enum! {
    /// Reductions over a set of axes.
    pub enum ReduceKind {
        Sum = "reduce_sum", Mean = "reduce_mean", Max = "reduce_max", Min = "reduce_min", Prod = "reduce_prod",
    }
}

ident_attr_enum! {
    /// How a scatter combines an update with the element already there (ONNX `reduction`).
    pub enum ScatterReduction {
        None = "none", Add = "add", Mul = "mul", Max = "max", Min = "min",
    }
}

ident_attr_enum! {
    /// What `pad` fills the new elements with (ONNX Pad `mode`).
    pub enum PadMode {
        /// The `value` input (0 when absent).
        Constant = "constant",
        /// The mirror image without repeating the edge.
        Reflect = "reflect",
        /// The edge element repeated.
        Edge = "edge",
        /// The tensor repeated periodically.
        Wrap = "wrap",
    }
}

ident_attr_enum! {
    /// How `pool` combines a window.
    pub enum PoolKind {
        Max = "max",
        /// The mean of the window's elements (see `count_include_pad`).
        Avg = "avg",
        /// `(sum |x|^p)^(1/p)`.
        Lp = "lp",
    }
}

ident_attr_enum! {
    /// How `resize` interpolates.
    pub enum ResizeMode {
        Nearest = "nearest", Linear = "linear", Cubic = "cubic",
    }
}

ident_attr_enum! {
    /// How `resize` maps an output coordinate to an input one (ONNX `coordinate_transformation_mode`).
    pub enum ResizeCoord {
        HalfPixel = "half_pixel", HalfPixelSymmetric = "half_pixel_symmetric", PytorchHalfPixel = "pytorch_half_pixel",
        AlignCorners = "align_corners", Asymmetric = "asymmetric",
    }
}

ident_attr_enum! {
    /// How `nearest` resizing rounds a fractional input coordinate.
    pub enum NearestRounding {
        RoundPreferFloor = "round_prefer_floor", RoundPreferCeil = "round_prefer_ceil", Floor = "floor", Ceil = "ceil",
    }
}

/// A mismatch between an op's name or attributes and what the op accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("unknown op `{name}`; valid ops are: {}", Op::all_names().join(", "))]
    UnknownOp { name: String },
    #[error("op `{op}` has no attribute `{attr}`; its attributes are: {valid}")]
    UnknownAttr { op: String, attr: String, valid: String },
    #[error("op `{op}` needs attribute `{attr}`")]
    MissingAttr { op: String, attr: String },
    #[error("attribute `{attr}` of `{op}`: {message}")]
    BadAttr { op: String, attr: String, message: String },
}

/// A field that may be left out of the text: `Option<T>` fields are omitted when `None`, fields with a
/// default are filled in when absent. Every present value is printed, so the text is canonical.
trait AttrField: Sized {
    fn push(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>);
    fn take(attrs: &mut BTreeMap<String, Attr>, op: &str, name: &str, default: Option<Self>) -> Result<Self, OpError>;
}

fn bad(op: &str, attr: &str, message: String) -> OpError {
    OpError::BadAttr { op: op.into(), attr: attr.into(), message }
}

impl<T: AttrType> AttrField for T {
    fn push(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        out.push((name, self.to_attr()));
    }
    fn take(attrs: &mut BTreeMap<String, Attr>, op: &str, name: &str, default: Option<Self>) -> Result<Self, OpError> {
        match attrs.remove(name) {
            Some(a) => T::from_attr(&a).map_err(|m| bad(op, name, m)),
            None => default.ok_or_else(|| OpError::MissingAttr { op: op.into(), attr: name.into() }),
        }
    }
}

impl<T: AttrType> AttrField for Option<T> {
    fn push(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        if let Some(v) = self {
            out.push((name, v.to_attr()));
        }
    }
    fn take(attrs: &mut BTreeMap<String, Attr>, op: &str, name: &str, _default: Option<Self>) -> Result<Self, OpError> {
        attrs.remove(name).map(|a| T::from_attr(&a).map_err(|m| bad(op, name, m))).transpose()
    }
}

/// The most inputs any op takes; `concat` and `einsum` have an open count.
pub const MAX_INPUTS: usize = usize::MAX;

macro_rules! define_ops {
    ($(
        $(#[$meta:meta])*
        $variant:ident = $name:literal { $($field:ident : $fty:ty $(= $default:expr)?),* $(,)? } inputs $min:literal ..= $max:expr;
    )*) => {
        /// One operation of the IR. Inputs are SSA values held by the graph node; attributes live here.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Op {
            $( $(#[$meta])* $variant { $($field: $fty),* }, )*
            /// A small dense constant inlined in the graph (shape arithmetic, scalars). Large data is a `weight`.
            Constant { value: Tensor },
            Unary(UnaryOp),
            Binary(BinaryOp),
            Compare(CompareOp),
            /// `reduce_*` over `axes` (empty: all axes).
            Reduce { kind: ReduceKind, axes: Vec<i64>, keepdims: bool },
        }

        impl Op {
            /// The op's name in the text form.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Op::$variant { .. } => $name, )*
                    Op::Constant { .. } => "constant",
                    Op::Unary(u) => u.name(),
                    Op::Binary(b) => b.name(),
                    Op::Compare(c) => c.name(),
                    Op::Reduce { kind, .. } => kind.name(),
                }
            }

            /// Every op name the text form accepts.
            pub fn all_names() -> Vec<&'static str> {
                let mut names = vec![$($name,)* "constant"];
                names.extend(UnaryOp::ALL.iter().map(|o| o.name()));
                names.extend(BinaryOp::ALL.iter().map(|o| o.name()));
                names.extend(CompareOp::ALL.iter().map(|o| o.name()));
                names.extend(ReduceKind::ALL.iter().map(|o| o.name()));
                names
            }

            /// Attributes in their canonical (declaration) order. `constant`'s value is printed by the
            /// text form itself, because its literal is typed by the result type.
            #[allow(unused_mut)]
            pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
                let mut out = Vec::new();
                match self {
                    $( Op::$variant { $($field),* } => { $( AttrField::push($field, stringify!($field), &mut out); )* } )*
                    Op::Constant { .. } | Op::Unary(_) | Op::Binary(_) | Op::Compare(_) => {}
                    Op::Reduce { axes, keepdims, .. } => {
                        out.push(("axes", axes.to_attr()));
                        out.push(("keepdims", keepdims.to_attr()));
                    }
                }
                out
            }

            /// Builds an op from its text-form name and attributes (all but `constant`, see
            /// [`Op::constant_from_attr`]). Unknown names and attributes are errors that list the valid ones.
            pub fn from_parts(name: &str, attrs: BTreeMap<String, Attr>) -> Result<Op, OpError> {
                let mut attrs = attrs;
                let (op, valid): (Op, &[&str]) = match name {
                    $( $name => (
                        Op::$variant { $($field: AttrField::take(&mut attrs, name, stringify!($field), None $(.or(Some($default)))?)?),* },
                        &[$(stringify!($field)),*],
                    ), )*
                    _ => {
                        if let Some(u) = UnaryOp::from_name(name) {
                            (Op::Unary(u), &[])
                        } else if let Some(b) = BinaryOp::from_name(name) {
                            (Op::Binary(b), &[])
                        } else if let Some(c) = CompareOp::from_name(name) {
                            (Op::Compare(c), &[])
                        } else if let Some(kind) = ReduceKind::from_name(name) {
                            (
                                Op::Reduce {
                                    kind,
                                    axes: AttrField::take(&mut attrs, name, "axes", Some(Vec::new()))?,
                                    keepdims: AttrField::take(&mut attrs, name, "keepdims", Some(true))?,
                                },
                                &["axes", "keepdims"],
                            )
                        } else if name == "constant" {
                            return Err(bad(name, "value", "constants are built with Op::constant_from_attr".into()));
                        } else {
                            return Err(OpError::UnknownOp { name: name.into() });
                        }
                    }
                };
                if let Some(extra) = attrs.keys().next() {
                    let valid = if valid.is_empty() { "(none)".to_string() } else { valid.join(", ") };
                    return Err(OpError::UnknownAttr { op: name.into(), attr: extra.clone(), valid });
                }
                Ok(op)
            }

            /// How many inputs the op accepts: `(min, max)`.
            pub fn input_arity(&self) -> (usize, usize) {
                match self {
                    $( Op::$variant { .. } => ($min, $max), )*
                    Op::Constant { .. } => (0, 0),
                    Op::Unary(_) | Op::Reduce { .. } => (1, 1),
                    Op::Binary(_) | Op::Compare(_) => (2, 2),
                }
            }
        }
    };
}

define_ops! {
    /// A named weight from the weight store; the result type is the stored tensor's type.
    Weight = "weight" { name: String } inputs 0..=0;

    // ---- model-level ops ----
    /// `(table[V, H], ids int[...]) -> [..., H]`; float tables keep their dtype, quantized ones give f32.
    Embedding = "embedding" {} inputs 2..=2;
    /// `(x[..., H], w[H]) -> x * rsqrt(mean(x^2) + eps) * (w + offset)`; Gemma uses offset 1.
    RmsNorm = "rms_norm" { eps: f32, offset: f32 = 0.0 } inputs 2..=2;
    /// `(x, w, b?)`: normalise over the dims from `axis` to the end (ONNX LayerNormalization).
    LayerNorm = "layer_norm" { axis: i64 = -1, eps: f32 } inputs 2..=3;
    /// `(x[..., K], w[N, K], b?[N]) -> [..., N]` with `w` of any float or quantized dtype.
    Linear = "linear" {} inputs 2..=3;
    /// Rotary position embedding of `(x[batch, seq, heads, head_dim], positions int[batch, seq])`, on the
    /// first `rotary_dim` elements of each head (partial rotary for GPT-NeoX style models).
    Rope = "rope" { style: RopeStyle = RopeStyle::Half, theta: f64, rotary_dim: u32, scaling: RopeScaling = RopeScaling::None } inputs 2..=2;
    /// Scaled dot-product attention of `(q[b, s, heads, d], k[b, s, kv_heads, d], v[b, s, kv_heads, dv],
    /// positions int[b, s], tree_mask? bool[s, s]) -> [b, s, heads, dv]`.
    ///
    /// Keys are "past" then "new": with `layer` set, past is the runtime KV cache of that layer (slot j at
    /// position j) and the new k/v are appended to it; without `layer`, k/v hold every key and the last
    /// `s` of them are the new ones. Query i sits at `positions[i]`; a new key sits at its query's position.
    /// Visibility: past keys at positions <= the query's; new keys causally (or by `tree_mask[i][j]`
    /// when given, for speculative trees); `window` hides keys at distance >= window except the first
    /// `sinks` positions. Heads are grouped for GQA/MQA (`heads % kv_heads == 0`).
    Attention = "attention" {
        layer: Option<u32>, scale: f32, causal: bool = true, window: Option<u32>, sinks: u32 = 0, softcap: Option<f32>
    } inputs 4..=5;
    Silu = "silu" {} inputs 1..=1;
    Gelu = "gelu" { approximate: GeluApprox = GeluApprox::None } inputs 1..=1;
    /// `silu(gate) * up`.
    Swiglu = "swiglu" {} inputs 2..=2;
    Softmax = "softmax" { axis: i64 = -1 } inputs 1..=1;
    /// `(x[..., H], w[V, H]) -> f32[..., V]`, optionally soft-capped: `cap * tanh(logits / cap)`.
    Logits = "logits" { softcap: Option<f32> } inputs 2..=2;

    // ---- generic tensor ops ----
    /// Numpy-style batched matrix product.
    MatMul = "matmul" {} inputs 2..=2;
    /// `(cond bool, a, b)` with broadcasting.
    Where = "where" {} inputs 3..=3;
    /// Converts every element to `to`. `saturate` (ONNX's, default true) and `round_mode` (default up)
    /// matter only for low-bit float targets (see [`crate::lowbit`]); absent means the default, and the
    /// importer records them only when they differ from it, so the text of ordinary casts is unchanged.
    Cast = "cast" { to: DType, saturate: Option<bool>, round_mode: Option<E8m0Rounding> } inputs 1..=1;
    ArgMax = "argmax" { axis: i64 = -1, keepdims: bool = true } inputs 1..=1;
    /// `(x, shape i64[r])`: ONNX Reshape (0 copies the input dim unless `allowzero`, -1 is inferred).
    Reshape = "reshape" { allowzero: bool = false } inputs 2..=2;
    Transpose = "transpose" { perm: Vec<i64> } inputs 1..=1;
    Squeeze = "squeeze" { axes: Vec<i64> } inputs 1..=1;
    Unsqueeze = "unsqueeze" { axes: Vec<i64> } inputs 1..=1;
    Concat = "concat" { axis: i64 } inputs 1..=MAX_INPUTS;
    /// One output per entry of `sizes`.
    Split = "split" { axis: i64, sizes: Vec<i64> } inputs 1..=1;
    /// `(x, starts i64[n], ends i64[n], axes? i64[n], steps? i64[n])` with ONNX clamping rules.
    Slice = "slice" {} inputs 3..=5;
    /// `(x, indices int[...])` along `axis`; negative indices count from the end.
    Gather = "gather" { axis: i64 = 0 } inputs 2..=2;
    /// `(x, shape i64[r])` with numpy broadcasting.
    Expand = "expand" {} inputs 2..=2;
    /// `(start, limit, delta)` scalars -> 1-D.
    Range = "range" {} inputs 3..=3;
    CumSum = "cumsum" { axis: i64, exclusive: bool = false, reverse: bool = false } inputs 1..=1;
    /// `(x, k i64[1])` -> `(values, indices i64)`: the `k` largest (or smallest) elements along `axis`
    /// (ONNX TopK), sorted, equal values in index order.
    TopK = "topk" { axis: i64 = -1, largest: bool = true } inputs 2..=2;
    /// Running products along `axis` (ONNX CumProd), with `cumsum`'s `exclusive` and `reverse`.
    CumProd = "cumprod" { axis: i64, exclusive: bool = false, reverse: bool = false } inputs 1..=1;
    /// The input's shape as i64, dims `start..end` (ONNX Shape-15).
    Shape = "shape" { start: i64 = 0, end: Option<i64> } inputs 1..=1;
    /// `(shape i64[r])` -> a tensor of `dtype` filled with `value`.
    ConstantOfShape = "constant_of_shape" { value: f64 = 0.0, dtype: DType = DType::F32 } inputs 1..=1;
    /// `(x, repeats i64[rank])`.
    Tile = "tile" {} inputs 2..=2;
    /// `(x, k? i64 scalar)`: keep the upper or lower triangle of the last two dims.
    Trilu = "trilu" { upper: bool = true } inputs 1..=2;
    /// `(x, indices int)` of one rank (ONNX GatherElements): the result has the indices' shape and
    /// reads `x` at the element's own coordinates with the one along `axis` replaced by the index.
    GatherElements = "gather_elements" { axis: i64 = 0 } inputs 2..=2;
    /// `(x, indices int, updates)` (ONNX ScatterElements): `x` with `updates` written (or combined by
    /// `reduction`) where `gather_elements` with the same indices would read.
    ScatterElements = "scatter_elements" { axis: i64 = 0, reduction: ScatterReduction = ScatterReduction::None } inputs 3..=3;
    /// `(x, indices int[..., k])` (ONNX GatherND): each index tuple picks a slice of `x` after the first
    /// `batch_dims` dims, which `x` and `indices` share.
    GatherNd = "gather_nd" { batch_dims: i64 = 0 } inputs 2..=2;
    /// `(x, indices int[..., k], updates)` (ONNX ScatterND): `x` with the slices the index tuples name
    /// replaced by (or combined by `reduction` with) `updates`.
    ScatterNd = "scatter_nd" { reduction: ScatterReduction = ScatterReduction::None } inputs 3..=3;
    /// Einstein summation over the inputs (ONNX Einsum): `equation` like `"bij,bjk->bik"`, with `...`
    /// for leading broadcast dims and the implicit output (letters used once, sorted) when `->` is absent.
    Einsum = "einsum" { equation: String } inputs 1..=MAX_INPUTS;
    /// `(x)` resized to `sizes` (one per dim) with `scales` the per-dim output/input ratios used by the
    /// coordinate mapping (ONNX Resize without antialiasing or crop-and-resize).
    Resize = "resize" {
        mode: ResizeMode, coord: ResizeCoord, nearest: NearestRounding = NearestRounding::RoundPreferFloor,
        cubic_a: f64 = -0.75, exclude_outside: bool = false, scales: Vec<f64>, sizes: Vec<i64>
    } inputs 1..=1;
    /// `(x[n, c, spatial...], w[m, c / group, kernel...], b?[m])` (ONNX Conv): a cross-correlation over
    /// the spatial dims; `pads` holds every spatial dim's count before, then every one's count after.
    Conv = "conv" { strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, group: i64 = 1 } inputs 2..=3;
    /// `(x[n, c, spatial...])` (ONNX MaxPool / AveragePool / LpPool) over windows of `kernel`; padded
    /// positions never count as elements, except in the divisor of `avg` with `count_include_pad`;
    /// `ceil_mode` keeps a last partial window when it starts inside the input or its begin padding.
    Pool = "pool" {
        kind: PoolKind, kernel: Vec<i64>, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>,
        ceil_mode: bool = false, count_include_pad: bool = false, p: i64 = 2
    } inputs 1..=1;
    /// `(x, pads i64[2 * rank], value? scalar)` (ONNX Pad): `pads` holds every axis's count before,
    /// then every axis's count after; negative counts remove elements.
    Pad = "pad" { mode: PadMode = PadMode::Constant } inputs 2..=3;
}

impl Op {
    /// A cast to `to` with the default attributes.
    pub fn cast(to: DType) -> Op {
        Op::Cast { to, saturate: None, round_mode: None }
    }

    /// The low-bit cast attributes of a `cast` (the defaults for any other op).
    pub fn low_bit_cast(&self) -> LowBitCast {
        let default = LowBitCast::default();
        match self {
            Op::Cast { saturate, round_mode, .. } => LowBitCast {
                saturate: saturate.unwrap_or(default.saturate),
                round_mode: round_mode.unwrap_or(default.round_mode),
            },
            _ => default,
        }
    }

    /// Whether the op is defined on values of the storage-only `dtype` ([`DType::is_storage_only`]): data
    /// movement, `where`, `shape`, casts of low-bit values, and equality of strings.
    pub fn accepts_storage_only(&self, dtype: DType) -> bool {
        match self {
            Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice {}
            | Op::Gather { .. }
            | Op::Expand {}
            | Op::Tile {}
            | Op::Where {}
            | Op::Shape { .. }
            | Op::Constant { .. } => true,
            Op::Cast { .. } => dtype != DType::Str,
            Op::Compare(CompareOp::Equal) => dtype == DType::Str,
            _ => false,
        }
    }

    /// The error for input `index` of type `ty` when the op refuses its storage-only dtype, else `None`.
    pub fn storage_only_refusal(&self, index: usize, ty: &crate::TensorType) -> Option<String> {
        let d = ty.dtype;
        if !d.is_storage_only() || self.accepts_storage_only(d) {
            return None;
        }
        let what = if d == DType::Str {
            "kiln holds and moves strings and compares them for equality, but computes nothing else on them (casts from and to strings included)"
                .to_string()
        } else {
            format!("kiln holds, moves and casts {d} values but computes nothing on them; cast them to f32 first")
        };
        Some(format!("`{}` is not defined on {d} tensors (input {index} is {ty}): {what}", self.name()))
    }

    /// How many results the node produces.
    pub fn num_outputs(&self) -> usize {
        match self {
            Op::Split { sizes, .. } => sizes.len(),
            Op::TopK { .. } => 2,
            _ => 1,
        }
    }

    /// Builds a `constant` from its text-form literal (a flat list of numbers or bools), shaped by the
    /// declared result type.
    pub fn constant_from_attr(value: &Attr, ty: &crate::TensorType) -> Result<Op, OpError> {
        let err = |m: String| bad("constant", "value", m);
        let shape =
            ty.shape.as_static().ok_or_else(|| err(format!("a constant needs a static shape, not {}", ty.shape)))?;
        let items = match value {
            Attr::List(items) => items.as_slice(),
            one => std::slice::from_ref(one),
        };
        let expected: usize = shape.iter().product();
        if items.len() != expected {
            return Err(err(format!("{} values given for type {ty}, which holds {expected}", items.len())));
        }
        let data = match ty.dtype {
            DType::Bool => {
                crate::TensorData::Bool(items.iter().map(bool::from_attr).collect::<Result<_, _>>().map_err(err)?)
            }
            // u64 literals above i64::MAX do not parse as i64, so u64 has its own parse.
            DType::U64 => {
                crate::TensorData::U64(items.iter().map(u64::from_attr).collect::<Result<_, _>>().map_err(err)?)
            }
            DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U8 | DType::U16 | DType::U32 => {
                let v: Vec<i64> = items.iter().map(i64::from_attr).collect::<Result<_, _>>().map_err(err)?;
                // `from_i64` wraps like `as`; a literal the dtype cannot hold is a mistake in the text.
                let (lo, hi) = match ty.dtype {
                    DType::I32 => (i32::MIN.into(), i32::MAX.into()),
                    DType::I16 => (i16::MIN.into(), i16::MAX.into()),
                    DType::I8 => (i8::MIN.into(), i8::MAX.into()),
                    DType::U8 => (0, u8::MAX.into()),
                    DType::U16 => (0, u16::MAX.into()),
                    DType::U32 => (0, u32::MAX.into()),
                    _ => (i64::MIN, i64::MAX),
                };
                if let Some(x) = v.iter().find(|x| !(lo..=hi).contains(*x)) {
                    return Err(err(format!("{x} is out of range for {}", ty.dtype)));
                }
                crate::TensorData::from_i64(ty.dtype, v).map_err(|e| err(e.to_string()))?
            }
            DType::F64 => {
                crate::TensorData::F64(items.iter().map(f64::from_attr).collect::<Result<_, _>>().map_err(err)?)
            }
            DType::F32 | DType::F16 | DType::BF16 => {
                // f16/bf16 values print as the f32 they widen to, which is exact, so f32 parsing is lossless.
                let v: Vec<f32> = items.iter().map(f32::from_attr).collect::<Result<_, _>>().map_err(err)?;
                match ty.dtype {
                    DType::F32 => crate::TensorData::F32(v),
                    DType::F16 => crate::TensorData::F16(v.into_iter().map(half::f16::from_f32).collect()),
                    _ => crate::TensorData::BF16(v.into_iter().map(half::bf16::from_f32).collect()),
                }
            }
            DType::LowBit(t) if t.is_int() => {
                let v: Vec<i64> = items.iter().map(i64::from_attr).collect::<Result<_, _>>().map_err(err)?;
                if let Some(x) = v.iter().find(|&&x| t.int_value(t.from_i64(x)) != Some(x)) {
                    return Err(err(format!("{x} is out of range for {t}")));
                }
                crate::TensorData::LowBit(t, v.into_iter().map(|x| t.from_i64(x)).collect())
            }
            DType::LowBit(t) => {
                // Values print exactly (every low-bit float is an f64), so a printed value reads back to
                // its code (without saturation, so that infinities stay infinities); a value the format
                // cannot hold is a mistake in the text.
                let v: Vec<f64> = items.iter().map(f64::from_attr).collect::<Result<_, _>>().map_err(err)?;
                let exact = LowBitCast { saturate: false, round_mode: E8m0Rounding::Nearest };
                let codes: Vec<u8> = v.iter().map(|&x| t.from_f64(x, exact)).collect();
                if let Some((x, _)) = v.iter().zip(&codes).find(|&(&x, &c)| {
                    let back = t.to_f64(c);
                    !(back == x || back.is_nan() && x.is_nan())
                }) {
                    return Err(err(format!("{x} is not a value of {t}")));
                }
                crate::TensorData::LowBit(t, codes)
            }
            DType::Str => {
                crate::TensorData::Str(items.iter().map(String::from_attr).collect::<Result<_, _>>().map_err(err)?)
            }
            q => return Err(err(format!("constants cannot have quantized type {q}"))),
        };
        let value = Tensor::new(shape, data).map_err(|e| err(e.to_string()))?;
        Ok(Op::Constant { value })
    }

    /// The text-form literal of a `constant`'s value: a flat list (or a single value for scalars).
    pub fn constant_attr(value: &Tensor) -> Attr {
        use crate::TensorData as D;
        let items: Vec<Attr> = match value.data() {
            D::F32(v) => v.iter().map(|x| x.to_attr()).collect(),
            D::F16(v) => v.iter().map(|x| x.to_f32().to_attr()).collect(),
            D::BF16(v) => v.iter().map(|x| x.to_f32().to_attr()).collect(),
            D::F64(v) => v.iter().map(|x| x.to_attr()).collect(),
            D::Bool(v) => v.iter().map(|x| x.to_attr()).collect(),
            D::U64(v) => v.iter().map(|x| x.to_attr()).collect(),
            D::Str(v) => v.iter().map(|x| x.to_attr()).collect(),
            D::LowBit(t, v) if !t.is_int() => v.iter().map(|&c| t.to_f64(c).to_attr()).collect(),
            d => (0..d.len()).map(|i| d.get_i64(i).to_attr()).collect(),
        };
        if value.shape().is_empty() {
            items.into_iter().next().expect("scalar has one element")
        } else {
            Attr::List(items)
        }
    }

    /// Whether the op reads or writes state outside its inputs (the KV cache), so it may be neither
    /// deduplicated nor removed when unused.
    pub fn has_side_effects(&self) -> bool {
        matches!(self, Op::Attention { layer: Some(_), .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(op: &Op) -> BTreeMap<String, Attr> {
        op.attrs().into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn attrs_round_trip_through_parts() {
        let ops = [
            Op::RmsNorm { eps: 1e-6, offset: 1.0 },
            Op::Attention { layer: Some(3), scale: 0.125, causal: true, window: Some(4096), sinks: 4, softcap: None },
            Op::Rope {
                style: RopeStyle::Half,
                theta: 500000.0,
                rotary_dim: 64,
                scaling: RopeScaling::Llama3 {
                    factor: 8.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position: 8192,
                },
            },
            Op::Reduce { kind: ReduceKind::Mean, axes: vec![-1], keepdims: true },
            Op::Unary(UnaryOp::Rsqrt),
            Op::cast(DType::BF16),
            Op::Cast {
                to: DType::LowBit(crate::LowBitType::F8E8M0),
                saturate: Some(false),
                round_mode: Some(E8m0Rounding::Nearest),
            },
            Op::Split { axis: -1, sizes: vec![2, 3] },
        ];
        for op in ops {
            assert_eq!(Op::from_parts(op.name(), parts(&op)).unwrap(), op);
        }
    }

    #[test]
    fn defaults_and_errors() {
        let op = Op::from_parts("rms_norm", [("eps".to_string(), 1e-5f32.to_attr())].into()).unwrap();
        assert_eq!(op, Op::RmsNorm { eps: 1e-5, offset: 0.0 });
        let e = Op::from_parts("rms_norm", BTreeMap::new()).unwrap_err();
        assert_eq!(e.to_string(), "op `rms_norm` needs attribute `eps`");
        let e = Op::from_parts("silu", [("x".to_string(), Attr::Bool(true))].into()).unwrap_err();
        assert!(e.to_string().contains("has no attribute `x`"), "{e}");
        let e = Op::from_parts("frobnicate", BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("rms_norm"), "{e}");
    }

    #[test]
    fn names_are_unique() {
        let mut names = Op::all_names();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
