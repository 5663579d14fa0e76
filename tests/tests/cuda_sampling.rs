//! The device's token-choice kernels against the CPU sampler on exactly the same logits (GPU machine).
//!
//! Sampling on the GPU must draw from the distribution the CPU sampler defines (which
//! `runtime/tests` checks with chi-square tests), and it is built to pick the very same token for the
//! same uniform number: candidates in the same order, the same top-k and top-p cut, the same inverse-CDF
//! walk. Here both get identical rows and identical uniforms and must agree on every draw, and the argmax
//! kernels (one block per row, and one row split over blocks) must agree with `argmax` on rows full of ties.
//!
//! Without a GPU these tests return early, unless `KILN_REQUIRE_GPU=1` (set by the GPU run,
//! `bench/gpu-check.md`), which makes a missing GPU a failure.

use kiln_codegen::cuda::{compile_module, template_source};
use kiln_runtime::cuda::{DeviceDraw, DeviceSampler};
use kiln_runtime::decoding::{Sampler, Sampling, argmax};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

/// The sampler on GPU 0, or `None` (the test is skipped) on a machine without one.
fn device_sampler(capacity: usize) -> Option<DeviceSampler> {
    let sms = common::gpu_archs()?;
    let kernels = compile_module(&template_source(), &sms).expect("the templates compile");
    Some(DeviceSampler::new(0, &kernels, capacity).expect("the GPU opens"))
}

/// Logits rows of `vocab` entries shaped like a language model's: a few strong tokens over a wide tail,
/// plus rows with many exact ties and with -inf entries (masked tokens).
fn rows(vocab: usize) -> Vec<(&'static str, Vec<f32>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let mut lm: Vec<f32> = (0..vocab).map(|_| rng.random::<f32>() * 8.0 - 6.0).collect();
    for _ in 0..20 {
        let i = rng.random_range(0..vocab);
        lm[i] = 6.0 + rng.random::<f32>() * 6.0;
    }
    let ties: Vec<f32> = (0..vocab).map(|_| (rng.random_range(0..12) as f32) * 0.5).collect();
    let mut masked = lm.clone();
    for (i, x) in masked.iter_mut().enumerate() {
        if i % 3 != 0 {
            *x = f32::NEG_INFINITY;
        }
    }
    let flat: Vec<f32> = (0..vocab).map(|_| rng.random::<f32>() * 0.5).collect();
    vec![("lm", lm), ("ties", ties), ("masked", masked), ("flat", flat)]
}

const SETTINGS: [(f32, usize, f32); 7] =
    [(1.0, 0, 1.0), (1.3, 0, 1.0), (0.8, 0, 0.9), (1.0, 40, 1.0), (0.7, 20, 0.8), (1.0, 1, 1.0), (2.0, 1000, 0.5)];

#[test]
fn device_draws_equal_the_cpu_sampler_on_the_same_logits_and_uniforms() {
    for vocab in [49_152, 128_256] {
        let Some(mut device) = device_sampler(vocab) else { return };
        for (name, row) in rows(vocab) {
            for (s, &(temperature, top_k, top_p)) in SETTINGS.iter().enumerate() {
                let sampling = Sampling::Sample { temperature, top_k, top_p, seed: 100 + s as u64 };
                let (mut cpu, mut uniforms) = (Sampler::new(&sampling).unwrap(), Sampler::new(&sampling).unwrap());
                let mut differ = Vec::new();
                for draw in 0..300 {
                    let want = cpu.sample(&row).unwrap();
                    let got = device
                        .sample(&row, DeviceDraw { temperature, top_k, top_p, uniform: uniforms.uniform() })
                        .unwrap();
                    if got != want {
                        differ.push((draw, want, got));
                    }
                }
                assert!(
                    differ.is_empty(),
                    "vocab {vocab}, row {name}, t={temperature} top_k={top_k} top_p={top_p}: (draw, cpu, gpu) {differ:?}"
                );
            }
        }
        let (t, k, p) = (0.8, 0, 0.9);
        let row = &rows(vocab)[0].1;
        let seconds =
            device.time_sample(row, DeviceDraw { temperature: t, top_k: k, top_p: p, uniform: 0.5 }, 50).unwrap();
        eprintln!("vocab {vocab}: one draw (t={t}, top_p={p}) takes {:.1} us on the device", seconds * 1e6);
    }
}

#[test]
fn device_argmax_equals_argmax_with_ties_and_refuses_what_the_cpu_refuses() {
    let vocab = 49_152;
    let Some(mut device) = device_sampler(4 * vocab) else { return };
    let all: Vec<f32> = rows(vocab).into_iter().flat_map(|(_, r)| r).collect();
    let want: Vec<u32> = all.chunks(vocab).map(|r| argmax(r).unwrap()).collect();
    assert_eq!(device.argmax(&all, vocab).unwrap(), want);
    for bad in [f32::NAN, f32::INFINITY] {
        let mut row = rows(vocab)[0].1.clone();
        row[777] = bad;
        assert!(argmax(&row).is_err());
        let err = device.argmax(&row, vocab).unwrap_err().to_string();
        assert!(err.contains("non-finite logits"), "{err}");
        let draw = DeviceDraw { temperature: 1.0, top_k: 0, top_p: 1.0, uniform: 0.5 };
        assert!(device.sample(&row, draw).unwrap_err().to_string().contains("non-finite logits"));
    }
    let all_masked = vec![f32::NEG_INFINITY; vocab];
    assert!(device.argmax(&all_masked, vocab).is_err());
}

#[test]
fn one_row_argmax_split_over_blocks_equals_argmax() {
    // One row is what a decode step picks from, and it is split over blocks of 2048 logits: ties across
    // blocks must still go to the lowest id, and a vocabulary that is not a multiple of the blocks' loads
    // (50,257) must neither lose its tail nor read past it. Repeated calls reuse the kernel's ticket counter.
    for vocab in [49_152, 50_257, 128_256] {
        let Some(mut device) = device_sampler(vocab) else { return };
        for _ in 0..3 {
            for (name, row) in rows(vocab) {
                let want = argmax(&row).unwrap();
                assert_eq!(device.argmax(&row, vocab).unwrap(), vec![want], "vocab {vocab}, row {name}");
            }
        }
        let mut last_wins = vec![0.0f32; vocab];
        last_wins[vocab - 1] = 1.0;
        assert_eq!(device.argmax(&last_wins, vocab).unwrap(), vec![vocab as u32 - 1], "vocab {vocab}: the last id");
    }
}

#[test]
fn one_sampler_draws_like_the_cpu_after_a_refused_row_and_across_row_lengths() {
    // A draw is a sequence of launches sharing a state in device memory that each draw must leave as it
    // found it: a refused row (a NaN, or every logit -inf) stops the draw half-way in its kernels, and rows of
    // other lengths (one block, a partial last block) reuse the same state and ticket counter. Draws after
    // each of those must still equal the CPU sampler's.
    let Some(mut device) = device_sampler(60_000) else { return };
    let draws = [(0.8, 0, 0.9), (1.0, 40, 1.0), (0.7, 20, 0.8)];
    let lm = |vocab: usize| rows(vocab).swap_remove(0).1;
    let mut nan = lm(50_257);
    nan[50_000] = f32::NAN;
    let masked = vec![f32::NEG_INFINITY; 4097];
    for (round, vocab) in [50_257, 1, 1000, 1024, 1025, 60_000, 3].into_iter().enumerate() {
        for (s, &(temperature, top_k, top_p)) in draws.iter().enumerate() {
            let refused = if (round + s) % 2 == 0 { &nan } else { &masked };
            let draw = DeviceDraw { temperature, top_k, top_p, uniform: 0.25 };
            let err = device.sample(refused, draw).unwrap_err().to_string();
            assert!(err.contains("non-finite logits"), "{err}");
            let row = lm(vocab.max(2))[..vocab].to_vec();
            let sampling = Sampling::Sample { temperature, top_k, top_p, seed: 40 + round as u64 };
            let (mut cpu, mut uniforms) = (Sampler::new(&sampling).unwrap(), Sampler::new(&sampling).unwrap());
            for draw in 0..20 {
                let want = cpu.sample(&row).unwrap();
                let got = device.sample(&row, DeviceDraw { temperature, top_k, top_p, uniform: uniforms.uniform() });
                assert_eq!(
                    got.unwrap(),
                    want,
                    "vocab {vocab}, t={temperature} top_k={top_k} top_p={top_p}, draw {draw}"
                );
            }
        }
    }
}
