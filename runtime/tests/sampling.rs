//! Token selection: greedy tie-breaking, parameter validation, determinism per seed, and the sampled
//! distribution after temperature, top-k and top-p, compared with probabilities computed here.

use kiln_runtime::RuntimeError;
use kiln_runtime::decoding::{Sampler, Sampling, argmax};

fn sample(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Sampling {
    Sampling::Sample { temperature, top_k, top_p, seed }
}

#[test]
fn greedy_breaks_ties_toward_the_lowest_id() {
    assert_eq!(argmax(&[0.5, 2.0, -1.0, 2.0]).unwrap(), 1);
    assert_eq!(argmax(&[3.0, 3.0]).unwrap(), 0);
    assert_eq!(argmax(&[f32::NEG_INFINITY, -7.0]).unwrap(), 1);
    let mut greedy = Sampler::new(&Sampling::Greedy).unwrap();
    assert_eq!(greedy.sample(&[0.0, 1.0, 1.0]).unwrap(), 1);
}

#[test]
fn bad_parameters_and_logits_are_errors() {
    for s in [sample(0.0, 0, 1.0, 1), sample(-1.0, 0, 1.0, 1), sample(f32::NAN, 0, 1.0, 1)] {
        let e = Sampler::new(&s).unwrap_err();
        assert!(matches!(&e, RuntimeError::Generate { message } if message.contains("temperature")), "{e}");
    }
    for top_p in [0.0, -0.5, 1.5, f32::NAN] {
        let e = Sampler::new(&sample(1.0, 0, top_p, 1)).unwrap_err();
        assert!(e.to_string().contains("top_p must be in (0, 1]"), "{e}");
    }
    let mut s = Sampler::new(&sample(1.0, 0, 1.0, 1)).unwrap();
    assert!(s.sample(&[1.0, f32::NAN]).is_err());
    assert!(s.sample(&[]).is_err());
    assert!(s.sample(&[f32::NEG_INFINITY; 3]).is_err());
    assert!(argmax(&[f32::NAN]).is_err());
}

fn logits() -> Vec<f32> {
    (0..50).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.4).collect()
}

fn draws(s: &Sampling, n: usize, logits: &[f32]) -> Vec<u32> {
    let mut sampler = Sampler::new(s).unwrap();
    (0..n).map(|_| sampler.sample(logits).unwrap()).collect()
}

#[test]
fn the_same_seed_gives_the_same_tokens_and_different_seeds_differ() {
    let l = logits();
    let a = draws(&sample(1.0, 0, 1.0, 7), 64, &l);
    assert_eq!(a, draws(&sample(1.0, 0, 1.0, 7), 64, &l));
    assert_ne!(a, draws(&sample(1.0, 0, 1.0, 8), 64, &l));
}

#[test]
fn top_k_of_one_is_greedy() {
    for seed in 0..20 {
        let l: Vec<f32> = (0..100).map(|i| ((i * 7919 + seed * 31) % 1000) as f32 / 100.0).collect();
        let mut s = Sampler::new(&sample(0.7, 1, 1.0, seed as u64)).unwrap();
        assert_eq!(s.sample(&l).unwrap(), argmax(&l).unwrap());
    }
}

/// Empirical frequencies of `n` draws against `expected` probabilities (ids beyond it never drawn).
fn check_frequencies(s: Sampling, logits: &[f32], expected: &[f64]) {
    let n = 40_000;
    let mut counts = vec![0usize; logits.len()];
    for t in draws(&s, n, logits) {
        counts[t as usize] += 1;
    }
    for (id, &c) in counts.iter().enumerate() {
        let p = expected.get(id).copied().unwrap_or(0.0);
        let f = c as f64 / n as f64;
        // Four standard deviations of a binomial frequency, plus a little.
        let tol = 4.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-9;
        assert!((f - p).abs() <= tol, "{s:?}: id {id} drawn with frequency {f}, expected {p}");
    }
}

#[test]
fn sampled_frequencies_follow_temperature_top_k_and_top_p() {
    let probs = [0.5f64, 0.3, 0.15, 0.05];
    let l: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
    check_frequencies(sample(1.0, 0, 1.0, 1), &l, &probs);
    // Temperature 2: p^(1/2), renormalised.
    let sq: Vec<f64> = probs.iter().map(|p| p.sqrt()).collect();
    let z: f64 = sq.iter().sum();
    check_frequencies(sample(2.0, 0, 1.0, 2), &l, &sq.iter().map(|p| p / z).collect::<Vec<_>>());
    // top-k 2: the two most likely, renormalised.
    check_frequencies(sample(1.0, 2, 1.0, 3), &l, &[0.625, 0.375]);
    // top-p 0.7: 0.5 < 0.7 <= 0.8, so ids 0 and 1.
    check_frequencies(sample(1.0, 0, 0.7, 4), &l, &[0.625, 0.375]);
    // top-p 0.9 then: 0.5, 0.8, 0.95 -> ids 0..3.
    check_frequencies(sample(1.0, 0, 0.9, 5), &l, &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95]);
    // top-k 3 then top-p 0.85 of the renormalised {0.5, 0.3, 0.15}/0.95: 0.526, 0.842 < 0.85 -> all 3.
    check_frequencies(sample(1.0, 3, 0.85, 6), &l, &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95]);
    // A tiny top-p keeps only the most likely token.
    check_frequencies(sample(1.0, 0, 0.01, 7), &l, &[1.0]);
}
