//! The CUDA code generator without a GPU: every template kernel (each op x dtype) and the kernels
//! generated for real models compile with NVRTC for sm_80, sm_87 and sm_90 and to PTX, and the generated
//! source of a tiny model is a reviewed snapshot.
//!
//! NVRTC comes from the pinned PyPI wheels (`.ci/run` installs them and sets `LD_LIBRARY_PATH`). Without
//! it the compile tests say so and pass, unless `KILN_REQUIRE_NVRTC=1` (CI) makes its absence a failure.

use std::path::Path;

use kiln_codegen::cuda::{self, CUBIN_ARCHS_CHECKED_IN_CI, compile_module, nvrtc_available, template_source};
use kiln_ir::KernelTarget;
use kiln_tests::hf_scratch::fixture_dir;

fn nvrtc_or_skip(test: &str) -> bool {
    if nvrtc_available() {
        return true;
    }
    if std::env::var("KILN_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
        panic!("{test}: KILN_REQUIRE_NVRTC=1 but libnvrtc.so.13 cannot be loaded (see .ci/run for the wheels)");
    }
    eprintln!("{test}: skipped, NVRTC is not installed (set KILN_REQUIRE_NVRTC=1 to make this a failure)");
    false
}

fn load(path: &Path) -> kiln_ir::Model {
    kiln::load_model(path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_template_kernel_compiles_for_each_ci_architecture_and_to_ptx() {
    if !nvrtc_or_skip("templates") {
        return;
    }
    let source = template_source();
    let images = compile_module(&source, &CUBIN_ARCHS_CHECKED_IN_CI).expect("the templates compile");
    assert_eq!(images.len(), 1 + CUBIN_ARCHS_CHECKED_IN_CI.len());
    let ptx = String::from_utf8_lossy(&images[0].bytes);
    assert_eq!(images[0].target, KernelTarget::Ptx);
    for kernel in &source.kernels {
        assert!(ptx.contains(&format!(".entry {kernel}(")), "the PTX has no entry point {kernel}");
    }
    // The launch trace's records exist only in its diagnostic build (next test).
    assert!(!ptx.contains("kiln_trace_records"), "the normal build carries the launch trace");
    for (image, sm) in images[1..].iter().zip(CUBIN_ARCHS_CHECKED_IN_CI) {
        assert_eq!(image.target, KernelTarget::Cubin { sm });
        assert_eq!(&image.bytes[..4], b"\x7fELF", "a cubin is an ELF file");
        for kernel in &source.kernels {
            let name = kernel.as_bytes();
            assert!(image.bytes.windows(name.len()).any(|w| w == name), "the sm_{sm} cubin lacks {kernel}");
        }
    }
}

#[test]
fn the_launch_trace_build_of_the_templates_compiles_for_sm_90() {
    // `KILN_CUDA_TRACE=1` compiles this build on the GPU machine; its records and its macro are checked here,
    // where the normal build never defines KILN_TRACE.
    if !nvrtc_or_skip("trace build") {
        return;
    }
    let source = cuda::with_launch_trace(template_source());
    assert!(source.code.starts_with("#define KILN_TRACE 1\n"));
    let images = compile_module(&source, &[90]).expect("the trace build compiles");
    let ptx = String::from_utf8_lossy(&images[0].bytes);
    // The runtime finds the buffer, its capacity and the count by these names.
    for global in ["kiln_trace_records", "kiln_trace_capacity", "kiln_trace_count"] {
        assert!(ptx.contains(global), "the trace build has no global {global}");
    }
}

#[test]
fn the_kernels_of_every_fixture_architecture_compile() {
    if !nvrtc_or_skip("fixtures") {
        return;
    }
    let mut dirs: Vec<_> =
        ["llama", "mistral", "qwen2", "qwen3", "gemma3", "gpt2"].iter().map(|a| fixture_dir(a)).collect();
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default"));
    for dir in dirs {
        let model = load(&dir);
        let source = cuda::generated_source(&model.graph).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let images = compile_module(&source, &[90]).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let ptx = String::from_utf8_lossy(&images[0].bytes);
        for kernel in &source.kernels {
            assert!(ptx.contains(&format!(".entry {kernel}(")), "{}: no entry {kernel}", dir.display());
        }
    }
}

#[test]
fn generated_source_of_the_tiny_gemma3_model() {
    // Gemma's embedding scale (a multiply by a constant) and its GELU-gated MLP are fused chains.
    let model = load(&fixture_dir("gemma3"));
    let source = cuda::cuda_source(&model.graph).expect("gemma3 has CUDA kernels");
    insta::assert_snapshot!(source.generated);
}

#[test]
fn generated_kernel_names_are_deterministic() {
    let model = load(&fixture_dir("gpt2"));
    let a = cuda::cuda_source(&model.graph).expect("gpt2 has CUDA kernels");
    let b = cuda::cuda_source(&load(&fixture_dir("gpt2")).graph).expect("gpt2 has CUDA kernels");
    assert_eq!(a, b);
}

#[test]
fn an_op_without_a_kernel_is_named_in_the_error() {
    let text = "graph @g(%0: f32[4, 8]) {\n  %1 = transpose(%0) {perm = [1, 0]} : f32[8, 4]\n  return %1\n}\n";
    let g = kiln_ir::text::parse(text).expect("valid IR");
    let err = cuda::cuda_source(&g).expect_err("transpose has no CUDA kernel").to_string();
    assert!(err.contains("transpose") && err.contains("--device cpu"), "{err}");
}

#[test]
fn a_low_bit_dtype_is_refused_naming_it() {
    // A cast to an 8-bit float is elementwise, so it reaches the fused-kernel emitter, which has no C type
    // for the storage-only dtypes and says so (the CPU executor runs such casts).
    let text = "graph @g(%0: f32[4]) {\n  %1 = cast(%0) {to = f8e4m3fn} : f8e4m3fn[4]\n  return %1\n}\n";
    let g = kiln_ir::text::parse(text).expect("valid IR");
    let err = cuda::cuda_source(&g).expect_err("no CUDA kernel stores f8e4m3fn").to_string();
    assert!(err.contains("f8e4m3fn") && err.contains("--device cpu"), "{err}");
}
