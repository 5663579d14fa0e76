//! End to end on the tiny llama-style decoder of `common`: incremental decoding with the KV cache
//! against full recomputation without it, greedy and sampled generation, stop tokens, cache rollback
//! and compaction, and the errors of `generate`.

mod common;

use common::{TINY, assert_close, decoder_inputs, tiny_executor};
use kiln_runtime::decoding::argmax;
use kiln_runtime::{CpuExecutor, GenerateConfig, RuntimeError, Sampling, generate};

const SEQ: [u32; 10] = [3, 17, 42, 5, 5, 31, 0, 47, 12, 8];

/// Logits of every position of `tokens`, computed in one run of the no-cache decoder.
fn full_logits(tokens: &[u32]) -> Vec<f32> {
    let mut exec = tiny_executor(1, false);
    let out = exec.run(&decoder_inputs(tokens, 0)).unwrap().remove(0);
    assert_eq!(out.shape(), &[1, tokens.len(), TINY.vocab]);
    out.to_f32_vec()
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn incremental_decoding_matches_full_recomputation() {
    let reference = full_logits(&SEQ);
    let mut exec = tiny_executor(1, true);
    let mut logits = exec.run(&decoder_inputs(&SEQ[..6], 0)).unwrap().remove(0).to_f32_vec();
    assert_eq!(exec.kv_len(), 6);
    for (i, &t) in SEQ.iter().enumerate().skip(6) {
        let step = exec.run(&decoder_inputs(&[t], i as i64)).unwrap().remove(0);
        assert_eq!(step.shape(), &[1, 1, TINY.vocab]);
        logits.extend(step.to_f32_vec());
        assert_eq!(exec.kv_len(), i + 1);
    }
    assert_close(&logits, &to_f64(&reference), 1e-5, "prefill + decode steps vs full recomputation");

    // A prefill of the whole sequence through the cache is the same computation again.
    exec.reset();
    let again = exec.run(&decoder_inputs(&SEQ, 0)).unwrap().remove(0).to_f32_vec();
    assert_close(&again, &to_f64(&reference), 1e-5, "cached prefill vs no-cache run");
}

fn greedy(max_new_tokens: usize) -> GenerateConfig {
    GenerateConfig { max_new_tokens, sampling: Sampling::Greedy, stop_tokens: vec![] }
}

#[test]
fn greedy_generation_is_deterministic_and_equals_argmax_of_full_recomputation() {
    let prompt = &SEQ[..4];
    let mut exec = tiny_executor(1, true);
    let out = generate(&mut exec, prompt, &greedy(8)).unwrap();
    assert_eq!(out.tokens.len(), 8);
    assert_eq!(out.stats.new_tokens, 8);
    assert_eq!(out.stats.steps, 8);
    assert!(out.stats.tokens_per_s > 0.0);
    assert_eq!(exec.kv_len(), prompt.len() + 7, "the last token is sampled but not yet fed");
    assert_eq!(generate(&mut exec, prompt, &greedy(8)).unwrap().tokens, out.tokens, "same executor, same tokens");
    assert_eq!(generate(&mut tiny_executor(1, true), prompt, &greedy(8)).unwrap().tokens, out.tokens);

    // Independent check: recompute the whole sequence each step and take the argmax of the last row.
    let mut seq = prompt.to_vec();
    for _ in 0..8 {
        let logits = full_logits(&seq);
        seq.push(argmax(&logits[(seq.len() - 1) * TINY.vocab..]).unwrap());
    }
    assert_eq!(&seq[prompt.len()..], out.tokens.as_slice());
}

#[test]
fn generation_stops_after_a_stop_token() {
    let prompt = &SEQ[..3];
    let all = generate(&mut tiny_executor(1, true), prompt, &greedy(10)).unwrap().tokens;
    let stop = all[3];
    let first = all.iter().position(|&t| t == stop).unwrap();
    let config = GenerateConfig { stop_tokens: vec![stop], ..greedy(10) };
    let out = generate(&mut tiny_executor(1, true), prompt, &config).unwrap();
    assert_eq!(out.tokens, all[..=first].to_vec());
    assert_eq!(out.stats.new_tokens, first + 1);
}

fn sampled(seed: u64, top_k: usize) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: 12,
        sampling: Sampling::Sample { temperature: 1.5, top_k, top_p: 0.95, seed },
        stop_tokens: vec![],
    }
}

#[test]
fn sampling_is_reproducible_per_seed() {
    let prompt = &SEQ[..5];
    let a = generate(&mut tiny_executor(1, true), prompt, &sampled(11, 0)).unwrap().tokens;
    let b = generate(&mut tiny_executor(1, true), prompt, &sampled(11, 0)).unwrap().tokens;
    let c = generate(&mut tiny_executor(1, true), prompt, &sampled(12, 0)).unwrap().tokens;
    assert_eq!(a, b);
    assert_ne!(a, c);
    let greedy_tokens = generate(&mut tiny_executor(1, true), prompt, &greedy(12)).unwrap().tokens;
    assert_ne!(a, greedy_tokens, "temperature 1.5 over 12 tokens should leave the greedy path");
}

#[test]
fn top_k_one_sampling_equals_greedy() {
    let prompt = &SEQ[2..7];
    let g = generate(&mut tiny_executor(1, true), prompt, &greedy(12)).unwrap().tokens;
    for seed in [1, 2, 3] {
        assert_eq!(generate(&mut tiny_executor(1, true), prompt, &sampled(seed, 1)).unwrap().tokens, g);
    }
}

fn last_row(exec: &mut CpuExecutor, tokens: &[u32], first_position: i64) -> Vec<f32> {
    let out = exec.run(&decoder_inputs(tokens, first_position)).unwrap().remove(0).to_f32_vec();
    out[out.len() - TINY.vocab..].to_vec()
}

#[test]
fn truncate_and_compact_roll_back_speculated_tokens() {
    let reference = full_logits(&SEQ);
    let row = |i: usize| to_f64(&reference[i * TINY.vocab..(i + 1) * TINY.vocab]);
    let mut exec = tiny_executor(1, true);
    exec.run(&decoder_inputs(&SEQ[..7], 0)).unwrap();
    // Two wrong guesses for positions 7 and 8, rolled back.
    exec.run(&decoder_inputs(&[1, 2], 7)).unwrap();
    assert_eq!(exec.kv_len(), 9);
    exec.truncate_kv(7).unwrap();
    assert_close(&last_row(&mut exec, &SEQ[7..8], 7), &row(7), 1e-5, "after truncate_kv");

    // A guessed chain of three tokens where only the first is right: keep slots 0..=7 only.
    exec.run(&decoder_inputs(&[SEQ[8], 40, 41], 8)).unwrap();
    assert_eq!(exec.kv_len(), 11);
    exec.compact_kv(&(0..9).collect::<Vec<_>>()).unwrap();
    assert_eq!(exec.kv_len(), 9);
    assert_close(&last_row(&mut exec, &SEQ[9..10], 9), &row(9), 1e-5, "after compact_kv");

    assert!(matches!(exec.compact_kv(&[0, 10]), Err(RuntimeError::KvCache { .. })));
    assert!(matches!(exec.truncate_kv(11), Err(RuntimeError::KvCache { .. })));
}

#[test]
fn generate_rejects_bad_requests() {
    let mut exec = tiny_executor(1, true);
    let e = generate(&mut exec, &[], &greedy(4)).unwrap_err();
    assert!(e.to_string().contains("prompt is empty"), "{e}");
    let bad =
        GenerateConfig { sampling: Sampling::Sample { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }, ..greedy(4) };
    assert!(matches!(generate(&mut exec, &[1], &bad), Err(RuntimeError::Generate { .. })));
    let bad =
        GenerateConfig { sampling: Sampling::Sample { temperature: 1.0, top_k: 0, top_p: 1.5, seed: 0 }, ..greedy(4) };
    assert!(matches!(generate(&mut exec, &[1], &bad), Err(RuntimeError::Generate { .. })));
    // Token ids beyond the vocabulary are reported by the embedding.
    let e = generate(&mut exec, &[1, 999], &greedy(4)).unwrap_err();
    assert!(e.to_string().contains("id 999 is outside"), "{e}");
    // A graph without cached attention cannot be decoded step by step.
    let e = generate(&mut tiny_executor(1, false), &[1, 2], &greedy(4)).unwrap_err();
    assert!(matches!(e, RuntimeError::DecoderContract { .. }), "{e}");
    assert!(generate(&mut exec, &[1, 2], &greedy(0)).unwrap().tokens.is_empty());
}
