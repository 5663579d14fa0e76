//! Speculative sampling preserves the target distribution: a chi-square two-sample test between plain
//! sampling and speculative sampling (n-gram chain and tree drafters, a draft model) on a 16-token
//! decoder, for several temperatures and top-p values, with fixed seeds so it is deterministic. A
//! deliberately wrong acceptance rule must fail the same test, which shows it has the power to notice.

mod common;

use common::{TINY, TinyConfig, tiny_decoder, tiny_tree_decoder, tiny_weights};
use kiln_ir::{Tensor, WeightStore};
use std::collections::HashMap;

use kiln_runtime::decoding::{
    Drafter, ModelDrafter, NgramConfig, NgramDrafter, Sampler, generate_speculative,
    generate_speculative_accepting_every_draft, run_step,
};
use kiln_runtime::{CpuExecutor, GenerateConfig, GenerateOutput, GenerateStats, Sampling, generate};

const VOCAB: usize = 16;
const DRAWS: usize = 20_000;
/// The generated tokens whose distributions are compared (0-based: the 2nd to the 4th; the 1st comes from
/// the prefill, which speculation does not touch).
const COMPARED: [usize; 3] = [1, 2, 3];
/// Tokens generated per draw: the first verification step may draft 2 deep.
const NEW_TOKENS: usize = 4;

const SMALL: TinyConfig =
    TinyConfig { vocab: VOCAB, hidden: 16, heads: 2, kv_heads: 1, head_dim: 8, intermediate: 32, layers: 1, ..TINY };

/// The weights of `seed`, with the output head scaled up so that the next-token distributions are far from
/// uniform (a few likely tokens, a long tail).
fn weights(seed: u64) -> WeightStore {
    let random = tiny_weights(&SMALL, seed);
    let mut w = WeightStore::new();
    for (name, stored) in random.iter() {
        let mut t = stored.to_tensor();
        if name == "lm_head" {
            t = Tensor::f32(t.shape().to_vec(), t.to_f32_vec().iter().map(|x| x * 4.0).collect()).unwrap();
        }
        w.insert_tensor(name, &t).unwrap();
    }
    w
}

fn target() -> CpuExecutor {
    let w = weights(7);
    CpuExecutor::new(tiny_tree_decoder(&SMALL, &w), w).unwrap()
}

/// The draft model: the target's weights with an unscaled head (so its greedy drafts are the target's
/// most likely tokens, accepted as often as that token is sampled), in the graph without a tree mask.
fn draft_model() -> CpuExecutor {
    let w = tiny_weights(&SMALL, 7);
    CpuExecutor::new(tiny_decoder(&SMALL, &w, true), w).unwrap()
}

/// Runs `f` on one thread: the tiny model's ops are far too small to gain from rayon's parallelism, and
/// the test harness already runs the tests side by side.
fn single_threaded<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(f)
}

/// A prompt that repeats the target's own greedy continuation, so that n-gram drafts are often (not
/// always) what the target samples.
fn prompt(exec: &mut CpuExecutor) -> Vec<u32> {
    let start = vec![3, 9];
    let config = GenerateConfig { max_new_tokens: 6, sampling: Sampling::Greedy, stop_tokens: vec![] };
    let cont = generate(exec, &start, &config).unwrap().tokens;
    let mut p = start.clone();
    p.extend(&cont);
    p.extend(&start);
    p.extend(&cont[..2]);
    p
}

fn sampling(temperature: f32, top_p: f32, seed: u64) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: NEW_TOKENS,
        sampling: Sampling::Sample { temperature, top_k: 0, top_p, seed },
        stop_tokens: vec![],
    }
}

/// Per compared token, the histogram over the vocabulary of `DRAWS` generations.
struct Histograms {
    counts: Vec<[u64; VOCAB]>,
    drafted: usize,
    accepted: usize,
}

fn histograms(mut run: impl FnMut(u64) -> GenerateOutput, seed_base: u64, draws: usize) -> Histograms {
    let mut h = Histograms { counts: vec![[0; VOCAB]; COMPARED.len()], drafted: 0, accepted: 0 };
    for i in 0..draws as u64 {
        let out = run(seed_base + i);
        assert_eq!(out.tokens.len(), NEW_TOKENS);
        for (c, &t) in h.counts.iter_mut().zip(&COMPARED) {
            c[out.tokens[t] as usize] += 1;
        }
        h.drafted += out.stats.draft_tokens;
        h.accepted += out.stats.accepted_draft_tokens;
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; relative error below 1e-14).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let series = C[1..].iter().enumerate().fold(C[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// The regularized upper incomplete gamma function Q(a, x): the power series of P below `a + 1`, the
/// continued fraction of Q (modified Lentz) above.
fn gamma_q(a: f64, x: f64) -> f64 {
    assert!(a > 0.0 && x >= 0.0);
    if x == 0.0 {
        return 1.0;
    }
    let prefactor = (a * x.ln() - x - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        while term.abs() > sum.abs() * 1e-16 {
            n += 1.0;
            term *= x / n;
            sum += term;
        }
        1.0 - sum * prefactor
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            d = if d.abs() < tiny { 1.0 / tiny } else { 1.0 / d };
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        prefactor * h
    }
}

/// The chi-square survival function: P(X >= x) for `df` degrees of freedom.
fn chi2_sf(x: f64, df: usize) -> f64 {
    gamma_q(df as f64 / 2.0, x / 2.0)
}

/// The chi-square two-sample test of equal-size samples: bins with fewer than 10 draws in both samples
/// together are merged (the approximation needs populated bins). Returns the p-value.
fn two_sample_p(a: &[u64], b: &[u64]) -> f64 {
    let (na, nb) = (a.iter().sum::<u64>() as f64, b.iter().sum::<u64>() as f64);
    let (mut bins, mut rest) = (Vec::new(), (0u64, 0u64));
    for (&x, &y) in a.iter().zip(b) {
        if x + y >= 10 {
            bins.push((x, y));
        } else {
            rest = (rest.0 + x, rest.1 + y);
        }
    }
    if rest.0 + rest.1 > 0 {
        bins.push(rest);
    }
    if bins.len() < 2 {
        return 1.0;
    }
    let (ka, kb) = ((nb / na).sqrt(), (na / nb).sqrt());
    let stat: f64 = bins.iter().map(|&(x, y)| (ka * x as f64 - kb * y as f64).powi(2) / (x + y) as f64).sum();
    chi2_sf(stat, bins.len() - 1)
}

#[test]
fn the_chi_square_tail_matches_known_values() {
    for (x, df, p) in [
        (3.841_458_820_694_124, 1, 0.05),
        (23.209_251_158_954_356, 10, 0.01),
        (2.0, 2, (-1.0f64).exp()),
        (0.5, 3, 0.918_891_411_654_676),
        (100.0, 60, 0.000_916_828_861_456_08),
    ] {
        let got = chi2_sf(x, df);
        assert!((got - p).abs() <= 1e-9 * p.max(1e-3), "chi2_sf({x}, {df}) = {got}, not {p}");
    }
    assert!(two_sample_p(&[500, 500], &[500, 500]) > 0.99);
    assert!(two_sample_p(&[600, 400], &[400, 600]) < 1e-10);
}

/// Plain sampling: per draw, a fresh [`Sampler`] with the draw's seed picks each token from the target's
/// logits after the tokens so far, as [`generate`] does. Only 16^3 prefixes can occur, so each prefix's
/// logits are computed once (by a prefill of the whole prefix) instead of in every draw.
fn plain(exec: &mut CpuExecutor, prompt: &[u32], t: f32, top_p: f32) -> Histograms {
    let mut memo: HashMap<Vec<u32>, Vec<f32>> = HashMap::new();
    let config = sampling(t, top_p, 0);
    histograms(
        |seed| {
            let Sampling::Sample { temperature, top_k, top_p, .. } = config.sampling else { unreachable!() };
            let mut sampler = Sampler::new(&Sampling::Sample { temperature, top_k, top_p, seed }).unwrap();
            let mut context = prompt.to_vec();
            for _ in 0..NEW_TOKENS {
                let logits = memo.entry(context.clone()).or_insert_with(|| {
                    exec.reset();
                    let positions: Vec<i64> = (0..context.len() as i64).collect();
                    let (all, vocab) = run_step(exec, &context, &positions, None).unwrap();
                    all[all.len() - vocab..].to_vec()
                });
                context.push(sampler.sample(logits).unwrap());
            }
            let tokens = context[prompt.len()..].to_vec();
            GenerateOutput { tokens, stats: GenerateStats::default() }
        },
        0,
        DRAWS,
    )
}

fn speculative(exec: &mut CpuExecutor, drafter: &mut dyn Drafter, prompt: &[u32], t: f32, top_p: f32) -> Histograms {
    histograms(|seed| generate_speculative(exec, drafter, prompt, &sampling(t, top_p, seed)).unwrap(), 1 << 32, DRAWS)
}

/// Compares every compared token's histograms; returns the smallest p-value.
fn min_p(what: &str, a: &Histograms, b: &Histograms) -> f64 {
    let mut worst = 1.0f64;
    for (i, (x, y)) in a.counts.iter().zip(&b.counts).enumerate() {
        let p = two_sample_p(x, y);
        eprintln!("{what}: token {}: p = {p:.4}", COMPARED[i]);
        worst = worst.min(p);
    }
    worst
}

fn ngram(branches: usize) -> NgramDrafter {
    NgramDrafter::new(NgramConfig { ngram_max: 5, draft_len: 4, branches }).unwrap()
}

/// Runs every drafter against plain sampling at one setting.
fn check_setting(t: f32, top_p: f32) {
    single_threaded(|| check_setting_here(t, top_p));
}

fn check_setting_here(t: f32, top_p: f32) {
    let mut exec = target();
    let prompt = prompt(&mut exec);
    let reference = plain(&mut exec, &prompt, t, top_p);
    // The draft model proposes its top 2 tokens at each level, so siblings go through the recursive
    // rejection rule; the n-gram drafter proposes chains.
    let mut drafters: Vec<(&str, Box<dyn Drafter>)> = vec![
        ("ngram chain", Box::new(ngram(1))),
        ("draft model tree", Box::new(ModelDrafter::new(draft_model(), 3, 2).unwrap())),
    ];
    for (name, drafter) in &mut drafters {
        let spec = speculative(&mut exec, drafter.as_mut(), &prompt, t, top_p);
        let rate = spec.accepted as f64 / spec.drafted as f64;
        let what = format!("T={t} top_p={top_p} {name} (acceptance {rate:.2})");
        // The test only means something if drafts are both accepted and rejected often.
        assert!((0.05..0.95).contains(&rate), "{what}: acceptance rate out of the informative range");
        let p = min_p(&what, &reference, &spec);
        assert!(p > 0.01, "{what}: speculative sampling changed the distribution (p = {p})");
    }
}

#[test]
fn speculative_sampling_preserves_the_distribution_at_t05() {
    check_setting(0.5, 1.0);
    check_setting(0.5, 0.9);
}

#[test]
fn speculative_sampling_preserves_the_distribution_at_t10() {
    check_setting(1.0, 1.0);
    check_setting(1.0, 0.9);
}

#[test]
fn speculative_sampling_preserves_the_distribution_at_t15() {
    check_setting(1.5, 1.0);
    check_setting(1.5, 0.9);
}

#[test]
fn a_rule_that_accepts_every_draft_fails_the_test() {
    single_threaded(accept_everything);
}

fn accept_everything() {
    let mut exec = target();
    let prompt = prompt(&mut exec);
    let reference = plain(&mut exec, &prompt, 1.0, 1.0);
    let mut drafter = ngram(1);
    let wrong = histograms(
        |seed| {
            generate_speculative_accepting_every_draft(&mut exec, &mut drafter, &prompt, &sampling(1.0, 1.0, seed))
                .unwrap()
        },
        1 << 32,
        // A wrong rule is far off; a fifth of the draws shows it (and keeps the test quick).
        DRAWS / 5,
    );
    let p = min_p("accept everything", &reference, &wrong);
    assert!(p < 0.01, "the chi-square test did not notice a wrong acceptance rule (p = {p})");
}
