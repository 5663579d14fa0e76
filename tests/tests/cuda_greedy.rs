//! The CUDA executor's queued decoding (`DecoderExecutor::decode_run`, GPU machine): the GPU chooses each
//! step's token itself (the argmax, or a draw with the uniform number the host's sampler would use) and
//! feeds it to the next step while the host is still reading earlier tokens back, so steps are queued past
//! the point where the caller may stop. It must hand over exactly the tokens the host picks from each step's
//! logits (and those of `decode_steps`, which waits for every token), leave the KV cache holding exactly
//! the tokens fed and the sampler having drawn for exactly the tokens handed over, stop where the caller
//! says (a run resumed after that starts from what it is given), and give the cache's error where its room
//! ends.
//!
//! Without a GPU these tests return early, unless `KILN_REQUIRE_GPU=1` (set by the GPU run,
//! `bench/gpu-check.md`), which makes a missing GPU a failure.

use std::path::{Path, PathBuf};

mod common;

use kiln_runtime::cuda::{CudaExecutor, CudaOptions};
use kiln_runtime::decoding::{DecoderExecutor, Sampler, Sampling, argmax, decode_steps};

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

/// The reference for sampled decoding: `n` tokens after `first` at `position`, each step's logits read back
/// and the token drawn on the host by the CPU sampler.
fn host_sampled(exec: &mut CudaExecutor, first: u32, position: i64, n: usize, sampling: &Sampling) -> Vec<u32> {
    let mut sampler = Sampler::new(sampling).unwrap();
    let mut tokens = Vec::with_capacity(n);
    let mut token = first;
    for i in 0..n {
        let (logits, _) = exec.step(&[token], &[position + i as i64], None).unwrap();
        token = sampler.sample(&logits).unwrap();
        tokens.push(token);
    }
    tokens
}

/// Queued greedy tokens after `first` at `position` (`decode_run`), stopping after `stop_after` tokens when
/// given; returns the tokens and the steps reported.
fn queued(
    exec: &mut CudaExecutor,
    first: u32,
    position: i64,
    max: usize,
    stop_after: Option<usize>,
) -> (Vec<u32>, usize) {
    queued_with(exec, first, position, max, &mut Sampler::new(&Sampling::Greedy).unwrap(), stop_after)
}

/// Queued tokens picked by `sampler`, as [`queued`].
fn queued_with(
    exec: &mut CudaExecutor,
    first: u32,
    position: i64,
    max: usize,
    sampler: &mut Sampler,
    stop_after: Option<usize>,
) -> (Vec<u32>, usize) {
    let mut tokens = Vec::new();
    let steps = exec
        .decode_run(first, position, max, sampler, &mut |t| {
            tokens.push(t);
            stop_after.is_none_or(|n| tokens.len() < n)
        })
        .unwrap();
    (tokens, steps)
}

#[test]
fn queued_decoding_hands_over_the_tokens_of_step_by_step_decoding() {
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
        decode_steps(&mut exec, first, p, 40, &mut Sampler::new(&Sampling::Greedy).unwrap(), &mut |t| {
            stepwise.push(t);
            true
        })
        .unwrap();
        assert_eq!(stepwise, want, "{name}: decode_steps");

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

        // Sampled: the device draws with the uniform numbers of the host's sampler (top-k and top-p, and
        // temperature alone: three walks and one), queued like greedy steps.
        for sampling in [
            Sampling::Sample { temperature: 0.9, top_k: 50, top_p: 0.95, seed: 7 },
            Sampling::Sample { temperature: 1.2, top_k: 0, top_p: 1.0, seed: 8 },
        ] {
            prefill(&mut exec, &prompt);
            let want = host_sampled(&mut exec, first, p, 40, &sampling);
            prefill(&mut exec, &prompt);
            let (got, steps) = queued_with(&mut exec, first, p, 40, &mut Sampler::new(&sampling).unwrap(), None);
            assert_eq!(got, want, "{name} {sampling:?}: queued draws differ from the host sampler's");
            assert_eq!((steps, exec.kv_len()), (40, prompt.len() + 40), "{name}");
            prefill(&mut exec, &prompt);
            let mut stepwise = Vec::new();
            decode_steps(&mut exec, first, p, 40, &mut Sampler::new(&sampling).unwrap(), &mut |t| {
                stepwise.push(t);
                true
            })
            .unwrap();
            assert_eq!(stepwise, want, "{name} {sampling:?}: decode_steps");
            // Stopped after 9 tokens with a step queued past them: the sampler has drawn for those 9 only.
            prefill(&mut exec, &prompt);
            let mut sampler = Sampler::new(&sampling).unwrap();
            let (head, steps) = queued_with(&mut exec, first, p, 40, &mut sampler, Some(9));
            assert_eq!((head.as_slice(), steps, exec.kv_len()), (&want[..9], 9, prompt.len() + 9), "{name}");
            let mut reference = Sampler::new(&sampling).unwrap();
            for _ in 0..9 {
                reference.uniform();
            }
            assert_eq!(sampler.uniform(), reference.uniform(), "{name}: the sampler drew for queued steps");
        }
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
        .decode_run(first, prompt.len() as i64, 100, &mut Sampler::new(&Sampling::Greedy).unwrap(), &mut |t| {
            tokens.push(t);
            true
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceed the CUDA KV cache of 32 tokens"), "{err}");
    // Every slot of the cache was used: 20 prompt tokens and 12 fed tokens, whose 12 tokens came back.
    assert_eq!((tokens.len(), exec.kv_len()), (12, 32));
}
