//! CUDA C for kiln graphs, compiled ahead of time with NVRTC.
//!
//! A model's module is one CUDA C source: the hand-written kernel templates (`kernels/*.cu`, instantiated
//! for f32, f16 and bf16 with deterministic `extern "C"` names such as `kiln_linear_wbf16_xf32`) followed
//! by the kernels derived from the graph (one per fused elementwise chain, see [`fused`]). The runtime
//! launches them by name, interpreting the graph in order. [`nvrtc`] compiles the module into PTX (for the
//! oldest supported architecture, so any newer GPU can run it) and into a cubin per requested `sm_XX`.

pub mod fused;
pub mod nvrtc;

use kiln_ir::{DType, Graph, Op};

pub use nvrtc::{CUBIN_ARCHS, CUBIN_ARCHS_CHECKED_IN_CI, NvrtcError, PTX_ARCH, compile_module, nvrtc_available};

/// The hand-written kernel templates, in the order they are concatenated.
const TEMPLATES: [(&str, &str); 7] = [
    ("common.cuh", include_str!("kernels/common.cuh")),
    // norm.cu first: the linear kernels' fused-norm prologue calls its row function.
    ("norm.cu", include_str!("kernels/norm.cu")),
    ("linear.cu", include_str!("kernels/linear.cu")),
    ("rope.cu", include_str!("kernels/rope.cu")),
    ("attention.cu", include_str!("kernels/attention.cu")),
    ("movement.cu", include_str!("kernels/movement.cu")),
    ("choose.cu", include_str!("kernels/choose.cu")),
];

/// The marker kernel of the kernels' calling conventions; the runtime refuses modules without it.
pub use kiln_ir::artifact::CUDA_KERNEL_ABI_MARKER as KERNEL_ABI_MARKER;

/// Why the CUDA code of a graph could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// The graph has an op (or an op on a dtype) the CUDA backend has no kernel for.
    #[error("node %{node} ({op}): {reason}; run this model on the CPU (`--device cpu`) or leave out the cuda target")]
    Unsupported { node: u32, op: String, reason: String },
    #[error(transparent)]
    Nvrtc(#[from] NvrtcError),
}

/// The CUDA C of one model: its source and the names of the kernels in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaSource {
    /// The module name the artifact files the compiled images under.
    pub module: String,
    /// The complete source NVRTC compiles.
    pub code: String,
    /// The graph-derived part of `code` (after the templates), which snapshot tests review.
    pub generated: String,
    /// Every `extern "C"` kernel in the module, templates first.
    pub kernels: Vec<String>,
}

/// The dtype suffix kernel names use for a float dtype (`f32`, `f16`, `bf16`).
pub fn dtype_suffix(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 => Some("f32"),
        DType::F16 => Some("f16"),
        DType::BF16 => Some("bf16"),
        _ => None,
    }
}

/// The names of the template kernels, one per op and dtype combination.
pub fn template_kernel_names() -> Vec<String> {
    let floats = ["f32", "f16", "bf16"];
    let mut names = vec![KERNEL_ABI_MARKER.to_string()];
    for x in floats {
        for w in floats {
            names.push(format!("kiln_linear_w{w}_x{x}"));
            names.push(format!("kiln_gemv_w{w}_x{x}"));
            names.push(format!("kiln_gemvp_w{w}_x{x}"));
            names.push(format!("kiln_gemvr_w{w}_x{x}"));
        }
    }
    for stem in [
        "rms_norm",
        "add_rms_norm",
        "layer_norm",
        "add_layer_norm",
        "softmax",
        "rope",
        "kv_append",
        "rope_kv_append",
        "attention_combine",
    ] {
        for x in floats {
            names.push(format!("kiln_{stem}_x{x}"));
        }
    }
    // The attention kernels come in head-size classes.
    for stem in ["attention", "attention_tiled", "attention_mma"] {
        for x in floats {
            for class in [64, 128, 256] {
                names.push(format!("kiln_{stem}_x{x}_d{class}"));
            }
        }
    }
    names.push("kiln_kv_compact".to_string());
    names.push("kiln_rope_table".to_string());
    for x in floats {
        names.push(format!("kiln_embedding_x{x}"));
    }
    for b in [2, 4, 8] {
        names.push(format!("kiln_slice_columns_b{b}"));
    }
    names.extend(["kiln_convert_f32_bf16", "kiln_convert_f32_f16", "kiln_bias_softcap"].map(String::from));
    names.extend(kiln_ir::artifact::CUDA_TOKEN_CHOICE_KERNELS.map(String::from));
    names
}

/// The module with only the templates (what CI compiles to check every op x dtype kernel).
pub fn template_source() -> CudaSource {
    let mut code = String::new();
    for (file, text) in TEMPLATES {
        code.push_str(&format!("// ---- {file} ----\n"));
        code.push_str(text);
        code.push('\n');
    }
    CudaSource {
        module: "kiln_templates".to_string(),
        code,
        generated: String::new(),
        kernels: template_kernel_names(),
    }
}

/// The CUDA C module of `graph`: the templates plus one kernel per fused elementwise group.
///
/// Every node must be one the CUDA runtime can execute; the first that is not is reported.
pub fn cuda_source(graph: &Graph) -> Result<CudaSource, CodegenError> {
    check_supported(graph)?;
    let generated = fused::emit_groups(graph)?;
    let mut source = template_source();
    source.module = module_name(&graph.name);
    source.code.push_str("// ---- generated from the graph ----\n");
    source.code.push_str(&generated.code);
    source.generated = generated.code;
    source.kernels.extend(generated.kernels);
    Ok(source)
}

/// The launch-trace build of a module: `KILN_TRACE` defined, so that every block records when it entered,
/// waited for the previous kernel and exited (common.cuh), for the runtime's `KILN_CUDA_TRACE=1` report. A
/// diagnostic build: the records cost an atomic and a few stores per block.
pub fn with_launch_trace(mut source: CudaSource) -> CudaSource {
    source.code.insert_str(0, "#define KILN_TRACE 1\n");
    source
}

/// Only the graph-derived kernels of `graph`, after the shared definitions they use: a faster compile
/// check of what a model adds to the (separately checked) templates.
pub fn generated_source(graph: &Graph) -> Result<CudaSource, CodegenError> {
    check_supported(graph)?;
    let generated = fused::emit_groups(graph)?;
    let (file, common) = TEMPLATES[0];
    let code = format!("// ---- {file} ----\n{common}\n// ---- generated from the graph ----\n{}", generated.code);
    Ok(CudaSource { module: module_name(&graph.name), code, generated: generated.code, kernels: generated.kernels })
}

fn module_name(graph: &str) -> String {
    let clean: String = graph.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("kiln_{clean}")
}

/// The ops the CUDA runtime runs (see `kiln_runtime::cuda`), with the dtypes its kernels take.
fn check_supported(g: &Graph) -> Result<(), CodegenError> {
    for &id in g.order() {
        let node = g.node(id);
        let unsupported =
            |reason: String| CodegenError::Unsupported { node: id.0, op: node.op.name().to_string(), reason };
        let float_activation = |i: usize| -> Result<(), CodegenError> {
            let dt = g.value_type(node.inputs[i]).dtype;
            dtype_suffix(dt)
                .map(|_| ())
                .ok_or_else(|| unsupported(format!("operand {i} is {dt}; the CUDA kernels take f32, f16 or bf16")))
        };
        match &node.op {
            Op::Weight { .. } | Op::Constant { .. } => {}
            Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {}
            op if kiln_ir::fusion::is_elementwise(op) => {}
            Op::Linear { .. } | Op::Logits { .. } => {
                float_activation(0)?;
                let wt = g.value_type(node.inputs[1]).dtype;
                if dtype_suffix(wt).is_none() {
                    return Err(unsupported(format!(
                        "its weight is {wt}; the CUDA backend runs f32, f16 and bf16 weights (quantized formats \
                         run on the CPU)"
                    )));
                }
            }
            Op::Embedding { .. } => {
                let wt = g.value_type(node.inputs[0]).dtype;
                if dtype_suffix(wt).is_none() {
                    return Err(unsupported(format!("its table is {wt}; the CUDA gather takes f32, f16 or bf16")));
                }
            }
            Op::RmsNorm { .. } | Op::LayerNorm { .. } | Op::Rope { .. } | Op::Attention { .. } => float_activation(0)?,
            Op::Softmax { .. } => float_activation(0)?,
            Op::Split { .. } => {}
            other => {
                return Err(unsupported(format!("the CUDA backend has no kernel for `{}`", other.name())));
            }
        }
    }
    Ok(())
}
