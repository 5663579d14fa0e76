//! What the GPU test files share: finding GPU 0, or skipping.

/// The cubin architectures to build for GPU 0 (its own, where kiln builds cubins for it), or `None` when the
/// machine has no GPU: the test is then skipped, unless `KILN_REQUIRE_GPU=1` (set by the GPU run,
/// `bench/gpu-check.md`) makes a missing GPU a failure.
pub fn gpu_archs() -> Option<Vec<u32>> {
    match kiln_runtime::cuda::device_sm(0) {
        Ok(sm) => Some(kiln_codegen::cuda::CUBIN_ARCHS.iter().copied().filter(|&a| a == sm).collect()),
        Err(e) => {
            assert!(std::env::var("KILN_REQUIRE_GPU").as_deref() != Ok("1"), "KILN_REQUIRE_GPU=1 but {e}");
            eprintln!("skipped: {e}");
            None
        }
    }
}
