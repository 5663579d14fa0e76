//! The CUDA executor's queued greedy decoding (`DecoderExecutor::greedy_run`, GPU machine): the GPU runs
//! each step's argmax itself and feeds the token to the next step while the host is still reading earlier
//! tokens back, so steps are queued past the point where the caller may stop. It must hand over exactly
//! the tokens of one-step-at-a-time greedy decoding (`greedy_steps`, which waits for every token), leave
//! the KV cache holding exactly the tokens fed, stop where the caller says (the queued steps after that
//! leave no trace in what follows), and give the cache's error where its room ends.
//!
//! Without a GPU these tests return early, unless `KILN_REQUIRE_GPU=1` (set by the GPU run,
//! `bench/gpu-check.md`), which makes a missing GPU a failure.

use std::path::{Path, PathBuf};

use kiln_runtime::cuda::{CudaExecutor, CudaOptions, device_sm};
use kiln_runtime::decoding::{DecoderExecutor, greedy_steps};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `path` on GPU 0 after the default pipeline (as `kiln run` prepares it), with a KV cache of
/// `max_context` tokens, and its vocabulary; `None` (the test is skipped) on a machine without a GPU.
fn executor(path: &Path, max_context: usize) -> Option<(CudaExecutor, u32)> {
    let sm = match device_sm(0) {
        Ok(sm) => sm,
        Err(e) => {
            assert!(std::env::var("KILN_REQUIRE_GPU").as_deref() != Ok("1"), "KILN_REQUIRE_GPU=1 but {e}");
            eprintln!("skipped: {e}");
            return None;
        }
    };
    let mut model = kiln::load_model(path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut manager = kiln_passes::pipelines::pipeline(kiln::lowering::default_pipeline(path)).unwrap();
    kiln::lowering::run_pipeline(&mut model, &mut manager).unwrap();
    let sms: Vec<u32> = kiln_codegen::cuda::CUBIN_ARCHS.iter().copied().filter(|&a| a == sm).collect();
    let kernels = kiln::compile_cuda_kernels(&model.graph, &sms).expect("the kernels compile");
    let options = CudaOptions { max_context, ..CudaOptions::default() };
    let vocab = model.meta.vocab_size as u32;
    Some((CudaExecutor::new(model.graph, &model.weights, &kernels, options).expect("the GPU opens"), vocab))
}

/// Prefills `prompt` and returns its greedy token.
fn prefill(exec: &mut CudaExecutor, prompt: &[u32]) -> u32 {
    exec.reset();
    let positions: Vec<i64> = (0..prompt.len() as i64).collect();
    exec.step_argmax(prompt, &positions, None).unwrap()[prompt.len() - 1]
}

/// Greedy tokens after `first` at `position`, by `greedy_run` (queued) or `greedy_steps` (one at a time),
/// stopping after `stop_after` tokens when given; returns the tokens and the steps reported.
fn run(
    exec: &mut CudaExecutor,
    queued: bool,
    first: u32,
    position: i64,
    max: usize,
    stop_after: Option<usize>,
) -> (Vec<u32>, usize) {
    let mut tokens = Vec::new();
    let mut on_token = |t: u32| {
        tokens.push(t);
        stop_after.is_none_or(|n| tokens.len() < n)
    };
    let steps = if queued {
        exec.greedy_run(first, position, max, &mut on_token).unwrap()
    } else {
        greedy_steps(exec, first, position, max, &mut on_token).unwrap()
    };
    (tokens, steps)
}

#[test]
fn queued_greedy_decoding_hands_over_the_tokens_of_step_by_step_decoding() {
    for name in ["models/default", "tests/fixtures/hf/llama", "tests/fixtures/hf/gemma3"] {
        let path = repo().join(name);
        let Some((mut exec, vocab)) = executor(&path, 256) else { return };
        let prompt: Vec<u32> = (0..12u32).map(|i| (i * 53 + 7) % vocab).collect();
        let first = prefill(&mut exec, &prompt);
        let (want, steps) = run(&mut exec, false, first, prompt.len() as i64, 40, None);
        assert_eq!(steps, 40, "{name}");
        assert_eq!(exec.kv_len(), prompt.len() + 40, "{name}");

        let first_again = prefill(&mut exec, &prompt);
        assert_eq!(first_again, first, "{name}");
        let (got, steps) = run(&mut exec, true, first, prompt.len() as i64, 40, None);
        assert_eq!(got, want, "{name}: queued greedy tokens differ from step-by-step ones");
        assert_eq!((steps, exec.kv_len()), (40, prompt.len() + 40), "{name}");

        // Stopped after 9 tokens (with steps queued past them), then resumed from the 9th: the tokens
        // continue exactly as in the uninterrupted run, so the queued steps' keys and values were dropped.
        prefill(&mut exec, &prompt);
        let (head, steps) = run(&mut exec, true, first, prompt.len() as i64, 40, Some(9));
        assert_eq!((head.as_slice(), steps, exec.kv_len()), (&want[..9], 9, prompt.len() + 9), "{name}");
        let (tail, _) = run(&mut exec, true, head[8], (prompt.len() + 9) as i64, 31, None);
        assert_eq!(tail, want[9..], "{name}: the run resumed after a stop differs");
    }
}

#[test]
fn queued_greedy_decoding_stops_with_the_cache_error_where_its_room_ends() {
    let path = repo().join("tests/fixtures/hf/llama");
    let Some((mut exec, vocab)) = executor(&path, 32) else { return };
    let prompt: Vec<u32> = (0..20u32).map(|i| (i * 31 + 5) % vocab).collect();
    let first = prefill(&mut exec, &prompt);
    let mut tokens = Vec::new();
    let err = exec
        .greedy_run(first, prompt.len() as i64, 100, &mut |t| {
            tokens.push(t);
            true
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceed the CUDA KV cache of 32 tokens"), "{err}");
    // Every slot of the cache was used: 20 prompt tokens and 12 fed tokens, whose 12 tokens came back.
    assert_eq!((tokens.len(), exec.kv_len()), (12, 32));
}
