//! Speculative decoding: a [`Drafter`] proposes a token tree, the target verifies all of it in one step,
//! and the longest path the target agrees with is kept, plus one token of the target's own (the bonus).
//!
//! # Exactness
//!
//! *Greedy*: a drafted token is accepted exactly when it is the argmax of the target's logits at its
//! parent, and the bonus token is the argmax after the last accepted token, so every emitted token is the
//! argmax of the target's logits after the tokens before it. Those logits are bit-identical to the ones
//! plain decoding computes for the same position: a verification step has at most
//! [`DecoderExecutor::max_exact_step_rows`] rows. On the CPU that is
//! [`crate::cpu::ROW_INDEPENDENT_MAX_ROWS`], where `linear`/`logits` compute every row with the row-independent
//! dot kernel (see `cpu::linear`), norms, rope and elementwise ops are per token, and attention of a tree
//! node sees exactly the keys of positions `0..=p` in increasing order (past keys from the cache, then its
//! ancestors, which precede it in the step; masked keys are skipped, not weighted by zero). Rejected
//! nodes are removed from the KV cache by compaction, so the cache again holds exactly the tokens of
//! positions `0..len`, computed as decoding them one by one would have. Hence the same tokens.
//!
//! *Sampling*: drafters are deterministic, so a drafted token `x` has draft distribution `q = onehot(x)`.
//! At a node whose children are `x1, x2, ...` (in the drafter's order), with `p` the target's processed
//! distribution (temperature, top-k, top-p; exactly what plain sampling draws from), `x1` is accepted
//! with probability `min(1, p(x1) / q(x1)) = p(x1)`; if rejected, `p` becomes the residual
//! `normalize(max(p - q, 0))` (`x1` removed) and `x2` is tried against it, and so on; when every child is
//! rejected, the bonus token is drawn from what remains. This is the recursive rejection rule of
//! SpecInfer, and each emitted token has exactly the target's distribution given the tokens before it.

use std::time::Instant;

use super::drafter::{DraftFeedback, DraftLimits, Drafter};
use super::executor::DecoderExecutor;
use super::generate::{GenerateConfig, GenerateOutput, GenerateStats, Prefill, prefill};
use super::sampling::{Sampler, argmax};
use super::step::{has_tree_mask, run_step};
use super::tree::TokenTree;
use crate::RuntimeError;

/// [`super::generate`] with speculative decoding: the same tokens for greedy decoding, the same
/// distribution for sampling, in fewer target steps when the drafter guesses well.
pub fn generate_speculative(
    exec: &mut dyn DecoderExecutor,
    drafter: &mut dyn Drafter,
    prompt: &[u32],
    config: &GenerateConfig,
) -> Result<GenerateOutput, RuntimeError> {
    generate_speculative_streaming(exec, drafter, prompt, config, |_| {})
}

/// [`generate_speculative`], calling `on_token` with each new token as soon as it is accepted.
pub fn generate_speculative_streaming(
    exec: &mut dyn DecoderExecutor,
    drafter: &mut dyn Drafter,
    prompt: &[u32],
    config: &GenerateConfig,
    on_token: impl FnMut(u32),
) -> Result<GenerateOutput, RuntimeError> {
    speculate(exec, drafter, prompt, config, Rule::Exact, on_token)
}

/// How drafted tokens are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// The exact rules of the module docs.
    Exact,
    /// Every drafted token is accepted: wrong on purpose (see [`generate_speculative_accepting_every_draft`]).
    AcceptEverything,
}

/// Speculative decoding with a deliberately WRONG rule that accepts every drafted token (the first child at
/// each level). It exists only so that the statistical test of speculative sampling can show it detects a
/// broken rule; never use it to generate.
#[doc(hidden)]
pub fn generate_speculative_accepting_every_draft(
    exec: &mut dyn DecoderExecutor,
    drafter: &mut dyn Drafter,
    prompt: &[u32],
    config: &GenerateConfig,
) -> Result<GenerateOutput, RuntimeError> {
    speculate(exec, drafter, prompt, config, Rule::AcceptEverything, |_| {})
}

fn speculate(
    exec: &mut dyn DecoderExecutor,
    drafter: &mut dyn Drafter,
    prompt: &[u32],
    config: &GenerateConfig,
    rule: Rule,
    mut on_token: impl FnMut(u32),
) -> Result<GenerateOutput, RuntimeError> {
    // The prefill is exactly plain decoding's.
    let Some(Prefill { mut sampler, first, vocab, mut stats }) = prefill(exec, prompt, config)? else {
        return Ok(GenerateOutput { tokens: Vec::new(), stats: GenerateStats::default() });
    };
    drafter.begin(prompt)?;
    let mut tokens = vec![first];
    on_token(first);

    let start = Instant::now();
    let mut context: Vec<u32> = prompt.to_vec();
    context.push(first);
    let mut done = config.stop_tokens.contains(&first) || tokens.len() >= config.max_new_tokens;
    while !done {
        let past = context.len() - 1;
        let limits = DraftLimits {
            max_depth: config.max_new_tokens - tokens.len() - 1,
            max_nodes: exec.max_exact_step_rows() - 1,
            row_cost: exec.extra_row_cost(),
        };
        let tree = drafter.propose(&context, limits)?;
        check_tree(&tree, limits, vocab, has_tree_mask(exec.graph()))?;
        let root = *context.last().expect("the context holds the prompt");
        let mask = if tree.is_chain() { None } else { Some(tree.step_mask()) };
        let (ids, positions) = (tree.step_tokens(root), tree.step_positions(past as i64));
        // Greedy verification needs only each row's argmax, which the executor computes where the logits are.
        let verified = if sampler.is_greedy() {
            Verified::Greedy(exec.step_argmax(&ids, &positions, mask.as_deref())?)
        } else {
            Verified::Logits(run_step(exec, &ids, &positions, mask.as_deref())?.0)
        };
        stats.steps += 1;

        let (accepted, bonus) = walk(&tree, &verified, vocab, &mut sampler, rule)?;
        // Keep the cache of the root and the accepted path; drop the rest of the tree.
        if accepted.iter().enumerate().all(|(i, &n)| i == n) {
            exec.truncate_kv(past + 1 + accepted.len())?;
        } else {
            let keep: Vec<usize> = (0..=past).chain(accepted.iter().map(|&n| past + 1 + n)).collect();
            exec.compact_kv(&keep)?;
        }
        stats.draft_tokens += tree.len();
        stats.accepted_draft_tokens += accepted.len();

        for t in accepted.iter().map(|&n| tree.nodes()[n].token).chain([bonus]) {
            tokens.push(t);
            context.push(t);
            on_token(t);
            if config.stop_tokens.contains(&t) || tokens.len() >= config.max_new_tokens {
                done = true;
                break;
            }
        }
        let feedback = DraftFeedback { proposed: tree.len(), depth: tree.depth(), accepted: accepted.len() };
        drafter.observe(&context, feedback)?;
    }
    stats.decode_seconds = start.elapsed().as_secs_f64();
    stats.new_tokens = tokens.len();
    let seconds = stats.prefill_seconds + stats.decode_seconds;
    stats.tokens_per_s = if seconds > 0.0 { stats.new_tokens as f64 / seconds } else { 0.0 };
    Ok(GenerateOutput { tokens, stats })
}

/// Refuses proposals the loop cannot verify: past the limits, outside the vocabulary, or a tree (rather
/// than a chain) for a graph without a tree mask.
fn check_tree(tree: &TokenTree, limits: DraftLimits, vocab: usize, tree_mask: bool) -> Result<(), RuntimeError> {
    let bad = |message: String| RuntimeError::Generate { message };
    if tree.len() > limits.max_nodes || tree.depth() > limits.max_depth {
        return Err(bad(format!(
            "the drafter proposed {} tokens {} deep, past the limits of {} tokens {} deep",
            tree.len(),
            tree.depth(),
            limits.max_nodes,
            limits.max_depth
        )));
    }
    if let Some(n) = tree.nodes().iter().find(|n| n.token as usize >= vocab) {
        return Err(bad(format!(
            "the drafter proposed token {} outside the target's vocabulary of {vocab} (do the draft and target \
             models share a tokenizer?)",
            n.token
        )));
    }
    if !tree_mask && !tree.is_chain() {
        return Err(bad(
            "token-tree speculation needs a decoder graph with a `tree_mask: bool[seq, seq]` input, and this graph \
             has only ids and positions (speculate with a chain, or re-import the model)"
                .to_string(),
        ));
    }
    Ok(())
}

/// What a verification step returned: each row's greedy token, or the logits rows (sampling).
enum Verified {
    Greedy(Vec<u32>),
    Logits(Vec<f32>),
}

/// Walks the verified tree from the root: at each node, either one of its children is accepted (greedy:
/// the argmax; sampling: the recursive rejection rule) and the walk goes on there, or the bonus token is
/// chosen and the walk ends. Returns the accepted nodes (root to leaf) and the bonus token.
fn walk(
    tree: &TokenTree,
    verified: &Verified,
    vocab: usize,
    sampler: &mut Sampler,
    rule: Rule,
) -> Result<(Vec<usize>, u32), RuntimeError> {
    let mut accepted = Vec::new();
    let mut at: Option<usize> = None;
    loop {
        let row = at.map_or(0, |n| n + 1);
        let children = tree.children(at);
        if rule == Rule::AcceptEverything
            && let Some(&c) = children.first()
        {
            accepted.push(c);
            at = Some(c);
            continue;
        }
        // Greedy: the target's token at this node; sampling: its distribution there.
        let p = match verified {
            Verified::Greedy(best) => Err(best[row]),
            Verified::Logits(logits) => {
                let row = &logits[row * vocab..(row + 1) * vocab];
                match sampler.candidates(row)? {
                    Some(p) => Ok(p),
                    None => Err(argmax(row)?),
                }
            }
        };
        let mut p = match p {
            Ok(p) => p,
            Err(best) => match children.iter().find(|&&c| tree.nodes()[c].token == best) {
                Some(&c) => {
                    accepted.push(c);
                    at = Some(c);
                    continue;
                }
                None => return Ok((accepted, best)),
            },
        };
        let mut chosen = None;
        for &c in &children {
            let x = tree.nodes()[c].token;
            let total = p.total();
            let u: f64 = rand::Rng::random(sampler.rng());
            if u * total < p.weight(x) {
                chosen = Some(c);
                break;
            }
            p.remove(x);
        }
        match chosen {
            Some(c) => {
                accepted.push(c);
                at = Some(c);
            }
            None => return Ok((accepted, p.draw(sampler.rng()))),
        }
    }
}
