//! The CUDA executor's queued greedy decoding (`DecoderExecutor::greedy_run`, GPU machine): the GPU runs
//! each step's argmax itself and feeds the token to the next step while the host is still reading earlier
//! tokens back, so steps are queued past the point where the caller may stop. It must hand over exactly
//! the greedy tokens the host picks from each step's logits (and those of `greedy_steps`, which waits for
//! every token), leave the KV cache holding exactly the tokens fed, stop where the caller says (a run
//! resumed after that starts from what it is given), and give the cache's error where its room ends.
//!
//! Without a GPU these tests return early, unless `KILN_REQUIRE_GPU=1` (set by the GPU run,
//! `bench/gpu-check.md`), which makes a missing GPU a failure.

use std::path::{Path, PathBuf};

mod common;

use kiln_runtime::cuda::{CudaExecutor, CudaOptions};
use kiln_runtime::decoding::{DecoderExecutor, argmax, greedy_steps};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `path` on GPU 0 after the default pipeline (as `kiln run` prepares it), with a KV cache of
/// `max_context` tokens, and its vocabulary; `None` (the test is skipped) on a machine without a GPU.
fn executor(path: &Path, max_context: usize) -> Option<(CudaExecutor, u32)> {
    let sms = common::gpu_archs()?;
    let mut model = kiln::load_model(path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut manager = kiln_passes::pipelines::pipeline(kiln::lowering::default_pipeline(path)).unwrap();
    kiln::lowering::run_pipeline(&mut model, &mut manager).unwrap();
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

/// The reference: `n` greedy tokens after `first` at `position`, each step's logits read back and the token
/// picked on the host (`argmax`), so that neither the device argmax nor the queue is involved.
fn host_greedy(exec: &mut CudaExecutor, first: u32, position: i64, n: usize) -> Vec<u32> {
    let mut tokens = Vec::with_capacity(n);
    let mut token = first;
    for i in 0..n {
        let (logits, _) = exec.step(&[token], &[position + i as i64], None).unwrap();
        token = argmax(&logits).unwrap();
        tokens.push(token);
    }
    tokens
}

/// Queued greedy tokens after `first` at `position` (`greedy_run`), stopping after `stop_after` tokens when
/// given; returns the tokens and the steps reported.
fn queued(
    exec: &mut CudaExecutor,
    first: u32,
    position: i64,
    max: usize,
    stop_after: Option<usize>,
) -> (Vec<u32>, usize) {
    let mut tokens = Vec::new();
    let steps = exec
        .greedy_run(first, position, max, &mut |t| {
            tokens.push(t);
            stop_after.is_none_or(|n| tokens.len() < n)
        })
        .unwrap();
    (tokens, steps)
}

#[test]
fn queued_greedy_decoding_hands_over_the_tokens_of_step_by_step_decoding() {
    for name in ["models/default", "tests/fixtures/hf/llama", "tests/fixtures/hf/gemma3"] {
        let path = repo().join(name);
        let Some((mut exec, vocab)) = executor(&path, 256) else { return };
        let prompt: Vec<u32> = (0..12u32).map(|i| (i * 53 + 7) % vocab).collect();
        let p = prompt.len() as i64;
        let first = prefill(&mut exec, &prompt);
        let want = host_greedy(&mut exec, first, p, 40);

        prefill(&mut exec, &prompt);
        let (got, steps) = queued(&mut exec, first, p, 40, None);
        assert_eq!(got, want, "{name}: queued greedy tokens differ from the host's picks");
        assert_eq!((steps, exec.kv_len()), (40, prompt.len() + 40), "{name}");

        // The same tokens through the one-step-at-a-time path (the device argmax, no queue).
        prefill(&mut exec, &prompt);
        let mut stepwise = Vec::new();
        greedy_steps(&mut exec, first, p, 40, &mut |t| {
            stepwise.push(t);
            true
        })
        .unwrap();
        assert_eq!(stepwise, want, "{name}: greedy_steps");

        // Stopped after the first token, and after 9 (steps were queued past both).
        for stop in [1, 9] {
            prefill(&mut exec, &prompt);
            let (head, steps) = queued(&mut exec, first, p, 40, Some(stop));
            assert_eq!((head.as_slice(), steps, exec.kv_len()), (&want[..stop], stop, prompt.len() + stop), "{name}");
        }
        // Resumed after the stop at 9 with another token than the one the queue had fed on the device: the
        // run must start from what it is given, at the cache length the stop left.
        let other = (want[8] + 1) % vocab;
        let (resumed, _) = queued(&mut exec, other, p + 9, 20, None);
        prefill(&mut exec, &prompt);
        host_greedy(&mut exec, first, p, 9);
        let reference = host_greedy(&mut exec, other, p + 9, 20);
        assert_eq!(resumed, reference, "{name}: the run resumed after a stop differs");
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
