//! The kernels derived from a graph: one CUDA kernel per fused elementwise group
//! ([`kiln_ir::fusion::elementwise_groups`]).
//!
//! A fused kernel computes the group's whole chain for one output element per thread (grid-stride), with
//! the intermediates in registers. Operands are read with numpy broadcasting through per-operand strides
//! the runtime passes in a `FusedArgs` block (stride 0 along a broadcast dim); single-element constants are
//! literals in the code. Float values are computed in f32 (f64 for f64 values), and an f16/bf16 result
//! is rounded to its dtype as soon as it is computed, as the CPU reference stores it.

use std::fmt::Write;

use kiln_ir::fusion::{ElementwiseGroup, MAX_GROUP_INPUTS, elementwise_groups, is_inline_constant};
use kiln_ir::{BinaryOp, CompareOp, DType, GeluApprox, Graph, Op, TensorData, UnaryOp, ValueId};

use super::CodegenError;

/// The highest rank fused kernels index (the `FusedArgs` block has room for this many dims).
pub const MAX_FUSED_RANK: usize = 6;

/// The generated part of a module.
pub struct Generated {
    pub code: String,
    pub kernels: Vec<String>,
}

/// The argument block every fused kernel takes (mirrored by the runtime's `#[repr(C)]` struct).
const FUSED_ARGS: &str = "struct FusedArgs {
    i64 n;                                    // output elements
    int rank;
    int flat;                                 // 1: every operand is laid out as the output (offset = i)
    i64 dims[6];                              // output dims
    i64 strides[8][6];                        // element strides of each operand per output dim (0: broadcast)
    const void* in[8];
    void* out;
};
";

/// Emits the kernels of every elementwise group of `g`.
pub fn emit_groups(g: &Graph) -> Result<Generated, CodegenError> {
    let groups = elementwise_groups(g);
    let mut code = String::new();
    let mut kernels = Vec::new();
    if !groups.is_empty() {
        code.push_str(FUSED_ARGS);
    }
    for group in &groups {
        code.push('\n');
        code.push_str(&emit_group(g, group)?);
        kernels.push(group.kernel_name());
    }
    Ok(Generated { code, kernels })
}

/// The C type a value of `dtype` is computed in.
fn c_type(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 | DType::F16 | DType::BF16 => "float",
        DType::F64 => "double",
        DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U8 => "i64",
        DType::Bool => "bool",
        _ => return None,
    })
}

/// The C storage type of `dtype` in memory.
fn storage_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float",
        DType::F16 => "f16_t",
        DType::BF16 => "bf16_t",
        DType::F64 => "double",
        DType::I64 => "i64",
        DType::I32 => "int",
        DType::I16 => "short",
        DType::I8 => "signed char",
        DType::U8 => "u8",
        DType::Bool => "u8",
        _ => unreachable!("quantized dtypes are rejected before emission"),
    }
}

fn load(dtype: DType, ptr: &str, offset: &str) -> String {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => format!("ldf<{}>({ptr}, {offset})", storage_type(dtype)),
        DType::Bool => format!("(((const u8*){ptr})[{offset}] != 0)"),
        DType::F64 => format!("((const double*){ptr})[{offset}]"),
        _ => format!("(i64)((const {}*){ptr})[{offset}]", storage_type(dtype)),
    }
}

fn store(dtype: DType, ptr: &str, offset: &str, value: &str) -> String {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => format!("stf<{}>({ptr}, {offset}, {value});", storage_type(dtype)),
        DType::Bool => format!("((u8*){ptr})[{offset}] = {value} ? 1 : 0;"),
        _ => format!("(({}*){ptr})[{offset}] = ({}){value};", storage_type(dtype), storage_type(dtype)),
    }
}

/// An exact C literal for a one-element constant, with the value in a comment.
fn literal(g: &Graph, v: ValueId) -> String {
    let t = g.constant_value(v).expect("inline constants are constants");
    match t.data() {
        TensorData::F32(x) => format!("__int_as_float(0x{:08x}) /* {:?} */", x[0].to_bits(), x[0]),
        TensorData::F16(x) => format!("__int_as_float(0x{:08x}) /* {:?} */", x[0].to_f32().to_bits(), x[0].to_f32()),
        TensorData::BF16(x) => format!("__int_as_float(0x{:08x}) /* {:?} */", x[0].to_f32().to_bits(), x[0].to_f32()),
        TensorData::F64(x) => format!("__longlong_as_double(0x{:016x}LL) /* {:?} */", x[0].to_bits(), x[0]),
        TensorData::Bool(x) => format!("{}", x[0]),
        d => format!("(i64){}LL", d.get_i64(0)),
    }
}

fn emit_group(g: &Graph, group: &ElementwiseGroup) -> Result<String, CodegenError> {
    let name = group.kernel_name();
    let out_ty = g.value_type(group.output);
    if out_ty.rank() > MAX_FUSED_RANK || group.inputs.len() > MAX_GROUP_INPUTS {
        let node = group.nodes[0];
        return Err(CodegenError::Unsupported {
            node: node.0,
            op: g.node(node).op.name().to_string(),
            reason: format!("fused kernels handle rank <= {MAX_FUSED_RANK}, not {}", out_ty.rank()),
        });
    }
    let mut body = String::new();
    let n_in = group.inputs.len();
    // Offsets of each operand for output element i.
    let offsets: Vec<String> = (0..n_in).map(|k| format!("o{k}")).collect();
    if n_in > 0 {
        // Operands laid out as the output (the common case: no broadcasting) skip the per-dim divisions.
        let _ = writeln!(
            body,
            "        i64 {};",
            offsets.iter().map(|o| format!("{o} = i")).collect::<Vec<_>>().join(", ")
        );
        let _ = writeln!(body, "        if (!a.flat) {{");
        let _ = writeln!(body, "            i64 rem = i;");
        let _ = writeln!(
            body,
            "            {};",
            offsets.iter().map(|o| format!("{o} = 0")).collect::<Vec<_>>().join(", ")
        );
        let _ = writeln!(body, "            for (int d = a.rank - 1; d >= 0; --d) {{");
        let _ = writeln!(body, "                const i64 c = rem % a.dims[d];");
        let _ = writeln!(body, "                rem /= a.dims[d];");
        for (k, o) in offsets.iter().enumerate() {
            let _ = writeln!(body, "                {o} += c * a.strides[{k}][d];");
        }
        let _ = writeln!(body, "            }}");
        let _ = writeln!(body, "        }}");
    }
    let mut names: std::collections::HashMap<ValueId, String> = std::collections::HashMap::new();
    for (k, &v) in group.inputs.iter().enumerate() {
        let ty = g.value_type(v);
        let ct = c_type(ty.dtype).ok_or_else(|| unsupported(g, group, format!("operand of type {ty}")))?;
        let var = format!("v{}", v.0);
        let _ = writeln!(
            body,
            "        const {ct} {var} = {};  // {ty}",
            load(ty.dtype, &format!("a.in[{k}]"), &offsets[k])
        );
        names.insert(v, var);
    }
    for &id in &group.nodes {
        let node = g.node(id);
        let operand = |slot: usize| -> String {
            let v = node.inputs[slot];
            names.get(&v).cloned().unwrap_or_else(|| {
                debug_assert!(is_inline_constant(g, v));
                literal(g, v)
            })
        };
        let in_dtype = |slot: usize| g.value_type(node.inputs[slot]).dtype;
        let out = node.outputs[0];
        let out_dtype = g.value_type(out).dtype;
        let ct = c_type(out_dtype).ok_or_else(|| unsupported(g, group, format!("a result of type {out_dtype}")))?;
        let expr = expression(&node.op, &operand, &in_dtype, out_dtype)
            .ok_or_else(|| unsupported(g, group, format!("`{}` on {}", node.op.name(), in_dtype(0))))?;
        let var = format!("v{}", out.0);
        // f16/bf16 results are rounded to their dtype right away, as the CPU stores them.
        let rounded = match out_dtype {
            DType::F16 => format!("to_f32(from_f32<f16_t>({expr}))"),
            DType::BF16 => format!("to_f32(from_f32<bf16_t>({expr}))"),
            _ => expr,
        };
        let _ = writeln!(body, "        const {ct} {var} = {rounded};  // {}", node.op.name());
        names.insert(out, var);
    }
    let out_dtype = out_ty.dtype;
    let _ = writeln!(body, "        {}", store(out_dtype, "a.out", "i", &names[&group.output]));
    Ok(format!(
        "// {} node(s) -> %{}: {}\nextern \"C\" __global__ void {name}(const FusedArgs a) {{\n    KILN_PDL_ENTRY();\n    for (i64 i = \
         (i64)blockIdx.x * blockDim.x + threadIdx.x; i < a.n; i += (i64)gridDim.x * blockDim.x) {{\n{body}    \
         }}\n}}\n",
        group.nodes.len(),
        group.output.0,
        out_ty
    ))
}

fn unsupported(g: &Graph, group: &ElementwiseGroup, what: String) -> CodegenError {
    let node = group.nodes[0];
    CodegenError::Unsupported {
        node: node.0,
        op: g.node(node).op.name().to_string(),
        reason: format!("fused elementwise kernels do not handle {what}"),
    }
}

/// The C expression of one elementwise op, or `None` where the op is not defined on the dtype.
fn expression(
    op: &Op,
    operand: &dyn Fn(usize) -> String,
    in_dtype: &dyn Fn(usize) -> DType,
    out_dtype: DType,
) -> Option<String> {
    let dt = in_dtype(0);
    let float = matches!(dt, DType::F32 | DType::F16 | DType::BF16);
    let double = dt == DType::F64;
    let int = dt.is_int();
    let boolean = dt == DType::Bool;
    let a = operand(0);
    // The f32 or f64 spelling of a math function.
    let f = |name: &str| if double { name.to_string() } else { format!("{name}f") };
    let one = if double { "1.0" } else { "1.0f" };
    Some(match op {
        Op::Unary(u) => match u {
            UnaryOp::Not if boolean => format!("!{a}"),
            UnaryOp::Neg if !boolean => format!("-{a}"),
            UnaryOp::Abs if int => format!("llabs({a})"),
            UnaryOp::Sign if int => format!("(i64)(({a} > 0) - ({a} < 0))"),
            UnaryOp::Relu if int => format!("({a} > 0 ? {a} : 0)"),
            UnaryOp::BitNot if int => format!("(~{a})"),
            _ if !(float || double) => return None,
            UnaryOp::Abs => format!("{}({a})", f("fabs")),
            UnaryOp::Exp => format!("{}({a})", f("exp")),
            UnaryOp::Log => format!("{}({a})", f("log")),
            UnaryOp::Sqrt => format!("{}({a})", f("sqrt")),
            UnaryOp::Rsqrt => format!("{one} / {}({a})", f("sqrt")),
            UnaryOp::Reciprocal => format!("{one} / {a}"),
            UnaryOp::Sin => format!("{}({a})", f("sin")),
            UnaryOp::Cos => format!("{}({a})", f("cos")),
            UnaryOp::Tanh => format!("{}({a})", f("tanh")),
            UnaryOp::Sigmoid => format!("{one} / ({one} + {}(-{a}))", f("exp")),
            UnaryOp::Erf => format!("{}({a})", f("erf")),
            UnaryOp::Tan => format!("{}({a})", f("tan")),
            UnaryOp::Asin => format!("{}({a})", f("asin")),
            UnaryOp::Acos => format!("{}({a})", f("acos")),
            UnaryOp::Atan => format!("{}({a})", f("atan")),
            UnaryOp::Sinh => format!("{}({a})", f("sinh")),
            UnaryOp::Cosh => format!("{}({a})", f("cosh")),
            UnaryOp::Asinh => format!("{}({a})", f("asinh")),
            UnaryOp::Acosh => format!("{}({a})", f("acosh")),
            UnaryOp::Atanh => format!("{}({a})", f("atanh")),
            UnaryOp::Floor => format!("{}({a})", f("floor")),
            UnaryOp::Ceil => format!("{}({a})", f("ceil")),
            UnaryOp::Round => format!("{}({a})", f("rint")),
            UnaryOp::Relu => format!("({a} > 0 ? {a} : ({a} == {a} ? 0 : {a}))"),
            UnaryOp::Sign => format!("({a} > 0 ? {one} : ({a} < 0 ? -{one} : {a}))"),
            UnaryOp::IsNan => format!("({a} != {a})"),
            UnaryOp::IsInf => format!("isinf({a})"),
            UnaryOp::Neg | UnaryOp::Not | UnaryOp::BitNot => return None,
        },
        Op::Binary(b) => {
            let c = operand(1);
            match b {
                BinaryOp::And if boolean => format!("({a} && {c})"),
                BinaryOp::Or if boolean => format!("({a} || {c})"),
                BinaryOp::Xor if boolean => format!("({a} != {c})"),
                _ if boolean => return None,
                BinaryOp::Add => format!("({a} + {c})"),
                BinaryOp::Sub => format!("({a} - {c})"),
                BinaryOp::Mul => format!("({a} * {c})"),
                BinaryOp::Div if int => format!("({c} == 0 ? (i64)0 : {a} / {c})"),
                BinaryOp::Div => format!("({a} / {c})"),
                BinaryOp::Max => format!("(({a} != {a} || {a} > {c}) ? {a} : {c})"),
                BinaryOp::Min => format!("(({a} != {a} || {a} < {c}) ? {a} : {c})"),
                BinaryOp::Pow if !int => format!("{}({a}, {c})", f("pow")),
                BinaryOp::Mod if int => format!("({c} == 0 ? (i64)0 : ((({a} % {c}) + {c}) % {c}))"),
                BinaryOp::Mod => format!("{}({a}, {c})", f("fmod")),
                _ => return None,
            }
        }
        Op::Compare(cmp) => {
            let c = operand(1);
            let sym = match cmp {
                CompareOp::Equal => "==",
                CompareOp::Less => "<",
                CompareOp::LessEqual => "<=",
                CompareOp::Greater => ">",
                CompareOp::GreaterEqual => ">=",
            };
            format!("({a} {sym} {c})")
        }
        Op::Where { .. } => format!("({a} ? {} : {})", operand(1), operand(2)),
        Op::Cast { .. } => {
            let target = c_type(out_dtype)?;
            match (c_type(dt)?, target) {
                (_, "bool") => format!("({a} != 0)"),
                (from, to) if from == to => a,
                (_, to) => format!("({to})({a})"),
            }
        }
        Op::Silu { .. } if float || double => format!("({a} / ({one} + {}(-{a})))", f("exp")),
        Op::Swiglu { .. } if float || double => {
            format!("({a} / ({one} + {}(-{a})) * {})", f("exp"), operand(1))
        }
        Op::Gelu { approximate } if float || double => match approximate {
            GeluApprox::None => format!("(0.5f * {a} * ({one} + {}({a} * 0.70710678118654752f)))", f("erf")),
            GeluApprox::Tanh => format!(
                "(0.5f * {a} * ({one} + {}(0.79788456080286536f * ({a} + 0.044715f * {a} * {a} * {a}))))",
                f("tanh")
            ),
        },
        _ => return None,
    })
}
