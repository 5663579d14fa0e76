//! Picking the next token from a row of logits: greedy argmax, or seeded sampling with temperature,
//! top-k and top-p (nucleus) truncation.
//!
//! Sampling is deterministic given the seed: the generator is `ChaCha8Rng::seed_from_u64(seed)`, the
//! candidates are ordered by descending logit with ties broken by the lower id, and one uniform draw
//! in `[0, 1)` per token picks from the cumulative distribution in that order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::RuntimeError;

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// The highest logit; ties go to the lowest id.
    Greedy,
    /// Softmax of `logits / temperature`, restricted to the `top_k` most likely tokens (`0`: all), then
    /// to the smallest prefix of them (by descending probability) whose mass reaches `top_p` (`1.0`: all).
    Sample { temperature: f32, top_k: usize, top_p: f32, seed: u64 },
}

impl Sampling {
    /// Checks the parameters: `temperature > 0` and `top_p` in `(0, 1]`.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if let Sampling::Sample { temperature, top_p, .. } = *self {
            // Written as negated comparisons so that NaN fails them too.
            if !(temperature > 0.0 && temperature.is_finite()) {
                return Err(RuntimeError::Generate {
                    message: format!("temperature must be a positive number, not {temperature} (use greedy for 0)"),
                });
            }
            if !(top_p > 0.0 && top_p <= 1.0) {
                return Err(RuntimeError::Generate { message: format!("top_p must be in (0, 1], not {top_p}") });
            }
        }
        Ok(())
    }
}

/// A [`Sampling`] rule with its random state, used for one generation.
#[derive(Clone, Debug)]
pub struct Sampler {
    sampling: Sampling,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(sampling: &Sampling) -> Result<Sampler, RuntimeError> {
        sampling.validate()?;
        let seed = match sampling {
            Sampling::Sample { seed, .. } => *seed,
            Sampling::Greedy => 0,
        };
        Ok(Sampler { sampling: sampling.clone(), rng: ChaCha8Rng::seed_from_u64(seed) })
    }

    /// The next token id for one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, RuntimeError> {
        let Some(mut candidates) = self.candidates(logits)? else {
            return argmax(logits);
        };
        Ok(candidates.draw(&mut self.rng))
    }

    /// The rule it samples by.
    pub fn sampling(&self) -> &Sampling {
        &self.sampling
    }

    /// The uniform number in `[0, 1)` that [`Sampler::sample`] would draw next (it advances the generator
    /// exactly as a draw does), for executors that pick the token where the logits are.
    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    /// Whether this sampler picks greedily (argmax) rather than at random.
    pub fn is_greedy(&self) -> bool {
        matches!(self.sampling, Sampling::Greedy)
    }

    /// The distribution [`Sampler::sample`] draws from for one row of logits (after temperature, top-k
    /// and top-p), or `None` for greedy sampling.
    pub fn candidates(&self, logits: &[f32]) -> Result<Option<Candidates>, RuntimeError> {
        check_logits(logits)?;
        let Sampling::Sample { temperature, top_k, top_p, .. } = self.sampling else {
            return Ok(None);
        };
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        if top_k > 0 {
            order.truncate(top_k);
        }
        let t = f64::from(temperature);
        let max = f64::from(logits[order[0] as usize]) / t;
        let mut weights: Vec<f64> = order.iter().map(|&i| (f64::from(logits[i as usize]) / t - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        if top_p < 1.0 {
            let mut mass = 0.0;
            let mut keep = weights.len();
            for (n, w) in weights.iter().enumerate() {
                mass += w / total;
                if mass >= f64::from(top_p) {
                    keep = n + 1;
                    break;
                }
            }
            weights.truncate(keep);
        }
        order.truncate(weights.len());
        Ok(Some(Candidates { order, weights }))
    }

    /// The sampler's random generator (speculative sampling draws its acceptance tests from it).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

/// A distribution over token ids: the candidates in descending order of logit with unnormalised
/// weights (ids absent from `order` have probability 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Candidates {
    order: Vec<u32>,
    weights: Vec<f64>,
}

impl Candidates {
    /// The sum of the weights (the normaliser).
    pub fn total(&self) -> f64 {
        self.weights.iter().sum()
    }

    /// The unnormalised weight of `id` (0 when it is not a candidate).
    pub fn weight(&self, id: u32) -> f64 {
        self.order.iter().position(|&c| c == id).map_or(0.0, |i| self.weights[i])
    }

    /// Sets the weight of `id` to 0: the residual distribution `normalize(max(p - onehot(id), 0))` left
    /// after rejecting a deterministic draft `id`.
    pub fn remove(&mut self, id: u32) {
        if let Some(i) = self.order.iter().position(|&c| c == id) {
            self.weights[i] = 0.0;
        }
    }

    /// One draw: a uniform `u` in `[0, 1)` picks from the cumulative weights in candidate order.
    pub fn draw(&mut self, rng: &mut ChaCha8Rng) -> u32 {
        let total = self.total();
        // One uniform per draw: the device sampler draws with `Sampler::uniform`, the same number.
        let target = rng.random::<f64>() * total;
        let mut cumulative = 0.0;
        for (&id, &w) in self.order.iter().zip(&self.weights) {
            cumulative += w;
            if target < cumulative {
                return id;
            }
        }
        // Rounding can leave `target` a hair above the last cumulative sum: the last candidate with weight.
        let last = self.weights.iter().rposition(|&w| w > 0.0).unwrap_or(self.order.len() - 1);
        self.order[last]
    }
}

/// Rejects rows a distribution cannot come from: empty, NaN or +inf, or nothing above -inf.
fn check_logits(logits: &[f32]) -> Result<(), RuntimeError> {
    let bad = |message: String| RuntimeError::Generate { message };
    if logits.is_empty() {
        return Err(bad("the logits row is empty".to_string()));
    }
    if let Some(i) = logits.iter().position(|x| x.is_nan() || *x == f32::INFINITY) {
        return Err(bad(format!("logit {i} is {}; the model produced non-finite values", logits[i])));
    }
    if logits.iter().all(|&x| x == f32::NEG_INFINITY) {
        return Err(bad("every logit is -inf".to_string()));
    }
    Ok(())
}

/// The id of the highest logit, the lowest such id on ties.
pub fn argmax(logits: &[f32]) -> Result<u32, RuntimeError> {
    check_logits(logits)?;
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    Ok(best as u32)
}
