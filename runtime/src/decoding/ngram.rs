//! [`NgramDrafter`]: adaptive multi-level n-gram drafting (ANPD, "Lossless Acceleration of Large
//! Language Model via Adaptive N-gram Parallel Decoding").
//!
//! For every order `n` in `1..=ngram_max`, a table maps each n-gram of the context to the tokens that
//! followed it, the most recent first. The tables are built from the prompt and extended with every
//! accepted token (never with unverified drafts). A draft continues the context token by token: the
//! longest suffix of (context + draft so far) found in a table gives the next token, falling back level by
//! level to shorter suffixes, and drafting stops where no level matches.
//!
//! # How long a draft is
//!
//! A drafted token is worth verifying when the chance that the target accepts it — and so every token
//! before it on its path — exceeds what one more row adds to the verification step
//! ([`DraftLimits::row_cost`], a fraction of a one-token step). The drafter estimates that chance from
//! its own record: for each kind of guess (the order of the n-gram that made it, and whether it was the
//! first candidate or an alternative branch) it keeps the recent acceptance rate of such tokens, an
//! exponential moving average over the tokens the target judged ([`LEARNING_RATE`] per verdict) that
//! also drifts back toward a prior of one in two ([`DRIFT`] per step). A path is extended while the
//! product of its tokens' rates stays above the row cost, up to `draft_len` tokens. So drafts grow long
//! where long n-grams keep matching what the model writes (code being copied), shrink within a few
//! steps to a token or none where guesses fail (fresh prose), and drafting resumes by itself once the
//! rates have drifted back up.
//! In tree mode the first drafted token branches over several candidates (the successors of the longest
//! matching suffix, then of shorter ones), each continued as above and merged into a prefix tree.

use std::collections::HashMap;

use super::drafter::{DraftFeedback, DraftLimits, Drafter};
use super::tree::TokenTree;
use crate::RuntimeError;

/// Successors remembered per n-gram (the most recent ones).
const SUCCESSORS: usize = 4;

/// The weight of one verdict in the moving acceptance rate of its kind of guess.
pub const LEARNING_RATE: f64 = 0.2;

/// How far every acceptance rate moves back toward [`PRIOR`] per step.
pub const DRIFT: f64 = 0.02;

/// The acceptance rate assumed for a kind of guess before any verdict: one in two.
pub const PRIOR: f64 = 0.5;

/// How an [`NgramDrafter`] drafts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NgramConfig {
    /// The longest n-gram order matched (ANPD's N; 5 worked best in the paper).
    pub ngram_max: usize,
    /// The longest draft; how much of it is used adapts to acceptance (see the module docs).
    pub draft_len: usize,
    /// Candidates tried for the first drafted token; 1 drafts a single chain.
    pub branches: usize,
}

impl Default for NgramConfig {
    fn default() -> Self {
        NgramConfig { ngram_max: 5, draft_len: 16, branches: 1 }
    }
}

/// The last proposal, kept to learn from its verdict.
#[derive(Clone, Debug)]
struct Proposal {
    tree: TokenTree,
    /// The kind (index into `rates`) of every node.
    kinds: Vec<usize>,
    /// The context length when it was proposed (the root is the context's last token).
    context_len: usize,
}

/// The adaptive multi-level n-gram drafter.
#[derive(Clone, Debug)]
pub struct NgramDrafter {
    config: NgramConfig,
    /// `tables[n - 1]`: n-gram -> the tokens that followed it, the most recent first.
    tables: Vec<HashMap<Vec<u32>, Vec<u32>>>,
    /// Tokens of the context already entered in the tables.
    indexed: usize,
    /// Recent acceptance rates by kind of guess: index `2 * (order - 1) + alternative`.
    rates: Vec<f64>,
    last: Option<Proposal>,
}

impl NgramDrafter {
    /// A drafter with `config`; `ngram_max` and `draft_len` must be at least 1, `branches` at least 1.
    pub fn new(config: NgramConfig) -> Result<NgramDrafter, RuntimeError> {
        for (what, v) in
            [("ngram_max", config.ngram_max), ("draft_len", config.draft_len), ("branches", config.branches)]
        {
            if v == 0 {
                return Err(RuntimeError::Generate {
                    message: format!("the n-gram drafter's {what} must be at least 1"),
                });
            }
        }
        Ok(NgramDrafter {
            config,
            tables: vec![HashMap::new(); config.ngram_max],
            indexed: 0,
            rates: vec![PRIOR; 2 * config.ngram_max],
            last: None,
        })
    }

    /// Enters the tokens of `context` past those already indexed: each token becomes the most recent
    /// successor of the n-grams that end just before it.
    fn index(&mut self, context: &[u32]) {
        for end in self.indexed.max(1)..context.len() {
            let next = context[end];
            for n in 1..=self.config.ngram_max.min(end) {
                let successors = self.tables[n - 1].entry(context[end - n..end].to_vec()).or_default();
                successors.retain(|&t| t != next);
                successors.insert(0, next);
                successors.truncate(SUCCESSORS);
            }
        }
        self.indexed = self.indexed.max(context.len());
    }

    /// Up to `want` distinct next tokens for `seq`, each with the order of the n-gram that predicts it:
    /// successors of its longest suffix found in a table, then of shorter ones.
    fn candidates(&self, seq: &[u32], want: usize) -> Vec<(u32, usize)> {
        let mut found: Vec<(u32, usize)> = Vec::new();
        for n in (1..=self.config.ngram_max.min(seq.len())).rev() {
            if let Some(successors) = self.tables[n - 1].get(&seq[seq.len() - n..]) {
                for &t in successors {
                    if !found.iter().any(|&(f, _)| f == t) {
                        found.push((t, n));
                        if found.len() == want {
                            return found;
                        }
                    }
                }
            }
        }
        found
    }

    /// The index in `rates` of a guess made by an n-gram of `order`, as the first candidate or not.
    fn kind(order: usize, alternative: bool) -> usize {
        2 * (order - 1) + usize::from(alternative)
    }
}

impl Drafter for NgramDrafter {
    fn begin(&mut self, prompt: &[u32]) -> Result<(), RuntimeError> {
        *self = NgramDrafter::new(self.config)?;
        self.index(prompt);
        Ok(())
    }

    fn propose(&mut self, context: &[u32], limits: DraftLimits) -> Result<TokenTree, RuntimeError> {
        self.index(context);
        let mut tree = TokenTree::new();
        let mut kinds = Vec::new();
        let depth = self.config.draft_len.min(limits.max_depth);
        // Lookups need only the last `ngram_max` tokens of context + draft.
        let tail = &context[context.len().saturating_sub(self.config.ngram_max)..];
        let mut seq = tail.to_vec();
        let mut path_kinds = Vec::new();
        let firsts = if depth == 0 { Vec::new() } else { self.candidates(context, self.config.branches) };
        for (rank, (first, order)) in firsts.into_iter().enumerate() {
            let kind = Self::kind(order, rank > 0);
            // The chance that every token of the path so far is accepted.
            let mut chance = self.rates[kind];
            if chance < limits.row_cost {
                continue;
            }
            seq.truncate(tail.len());
            seq.push(first);
            path_kinds.clear();
            path_kinds.push(kind);
            while seq.len() - tail.len() < depth {
                let Some(&(next, order)) = self.candidates(&seq, 1).first() else { break };
                let kind = Self::kind(order, false);
                chance *= self.rates[kind];
                if chance < limits.row_cost {
                    break;
                }
                seq.push(next);
                path_kinds.push(kind);
            }
            let path = &seq[tail.len()..];
            tree.insert_path(path, limits.max_nodes);
            // Nodes new to the tree take this path's kinds (a shared prefix keeps the first path's).
            let mut at = None;
            for (&token, &kind) in path.iter().zip(&path_kinds) {
                let Some(node) = tree.child(at, token) else { break };
                if node == kinds.len() {
                    kinds.push(kind);
                }
                at = Some(node);
            }
        }
        debug_assert_eq!(kinds.len(), tree.len(), "every node has a kind");
        self.last = Some(Proposal { tree: tree.clone(), kinds, context_len: context.len() });
        Ok(tree)
    }

    fn observe(&mut self, context: &[u32], feedback: DraftFeedback) -> Result<(), RuntimeError> {
        self.index(context);
        for rate in &mut self.rates {
            *rate += (PRIOR - *rate) * DRIFT;
        }
        let Some(Proposal { tree, kinds, context_len }) = self.last.take() else { return Ok(()) };
        // A node was judged when its parent was accepted (or it hangs below the root); it was accepted
        // when it is the token that followed on the accepted path. Parents precede children.
        let mut accepted = vec![false; tree.len()];
        for (i, node) in tree.nodes().iter().enumerate() {
            if !node.parent.is_none_or(|p| accepted[p]) {
                continue;
            }
            accepted[i] =
                node.depth <= feedback.accepted && context.get(context_len - 1 + node.depth) == Some(&node.token);
            let rate = &mut self.rates[kinds[i]];
            *rate += (f64::from(u8::from(accepted[i])) - *rate) * LEARNING_RATE;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits under which the prior (one in two) allows drafts of 6 tokens: 0.5^6 > 0.01 > 0.5^7.
    const LIMITS: DraftLimits = DraftLimits { max_depth: 100, max_nodes: 63, row_cost: 0.01 };

    #[test]
    fn drafts_from_the_longest_matching_suffix_and_learns_online() {
        let mut d = NgramDrafter::new(NgramConfig { ngram_max: 3, draft_len: 4, branches: 1 }).unwrap();
        // "1 2 3" is followed by 4 once and "3" by 9 later: the trigram wins over the unigram.
        let prompt = [1, 2, 3, 4, 5, 6, 3, 9, 1, 2, 3];
        d.begin(&prompt).unwrap();
        let t = d.propose(&prompt, LIMITS).unwrap();
        assert_eq!(t.step_tokens(3)[1..], [4, 5, 6, 3]);
        // The depth limit caps the draft.
        let t = d.propose(&prompt, DraftLimits { max_depth: 2, ..LIMITS }).unwrap();
        assert_eq!(t.step_tokens(3)[1..], [4, 5]);
        // Accepted tokens enter the tables: after "3 7", a later "3" prefers 7 (most recent).
        let mut context = prompt.to_vec();
        context.extend([7, 8]);
        d.observe(&context, DraftFeedback { proposed: 2, depth: 2, accepted: 0 }).unwrap();
        context.push(3);
        let t = d.propose(&context, LIMITS).unwrap();
        assert_eq!(t.nodes()[0].token, 7, "{t:?}");
        // No match at any level: no draft.
        assert!(d.propose(&[42], LIMITS).unwrap().is_empty());
    }

    #[test]
    fn tree_mode_branches_over_several_matches() {
        let mut d = NgramDrafter::new(NgramConfig { ngram_max: 2, draft_len: 3, branches: 3 }).unwrap();
        let prompt = [1, 5, 6, 1, 7, 8, 1];
        d.begin(&prompt).unwrap();
        let t = d.propose(&prompt, LIMITS).unwrap();
        let firsts: Vec<u32> = t.children(None).iter().map(|&i| t.nodes()[i].token).collect();
        assert_eq!(firsts, [7, 5], "most recent successor first");
        assert_eq!(t.len(), 6);
    }

    /// The prompt repeats "1 2 3 4 5 6 7 8"; the drafter proposes its continuation, and the target either
    /// follows the pattern (every guess right) or writes something else (every guess wrong).
    fn verdict(d: &mut NgramDrafter, context: &mut Vec<u32>, follows: bool, limits: DraftLimits) -> usize {
        let tree = d.propose(context, limits).unwrap();
        let drafted: Vec<u32> = tree.nodes().iter().map(|n| n.token).collect();
        let accepted = if follows { drafted.len() } else { 0 };
        context.extend(&drafted[..accepted]);
        // The bonus token: the pattern's next token, or a token the drafter has never seen.
        context.push(if follows { context[context.len() - 8] } else { 100 + context.len() as u32 });
        d.observe(context, DraftFeedback { proposed: drafted.len(), depth: tree.depth(), accepted }).unwrap();
        drafted.len()
    }

    #[test]
    fn drafting_backs_off_where_it_does_not_pay_and_grows_where_it_does() {
        let limits = DraftLimits { row_cost: 0.1, ..LIMITS };
        let mut d = NgramDrafter::new(NgramConfig { ngram_max: 3, draft_len: 12, branches: 1 }).unwrap();
        let mut context: Vec<u32> = (1..=8).cycle().take(40).collect();
        d.begin(&context).unwrap();
        // The prior (one in two) allows 3 tokens against a row cost of 0.1 (0.5^3 > 0.1 > 0.5^4).
        assert_eq!(verdict(&mut d, &mut context, true, limits), 3);
        // Accepted guesses raise the estimate: drafts grow to the limit.
        let lengths: Vec<usize> = (0..6).map(|_| verdict(&mut d, &mut context, true, limits)).collect();
        assert!(lengths.windows(2).all(|w| w[1] >= w[0]) && lengths[5] == 12, "{lengths:?}");
        // The target stops following: after a few wrong guesses the drafter stops proposing at all, even
        // though its tables still match (a new token follows every wrong guess, and the pattern's n-grams
        // keep predicting the pattern).
        let mut lengths = Vec::new();
        while lengths.last() != Some(&0) {
            context.extend([1, 2, 3]);
            lengths.push(verdict(&mut d, &mut context, false, limits));
            assert!(lengths.len() <= 20, "still drafting after 20 rejected drafts: {lengths:?}");
        }
        assert!(lengths[0] >= 4 && lengths.windows(2).all(|w| w[1] <= w[0]), "{lengths:?}");
        assert!(lengths[4] <= 2, "backs off within a few steps: {lengths:?}");
        // A cheaper row (a GPU) makes the same record worth a draft again.
        context.extend([1, 2, 3]);
        assert!(verdict(&mut d, &mut context, false, DraftLimits { row_cost: 0.001, ..limits }) > 0);
    }

    #[test]
    fn the_record_of_failures_fades_and_drafting_resumes() {
        let limits = DraftLimits { row_cost: 0.3, ..LIMITS };
        let mut d = NgramDrafter::new(NgramConfig { ngram_max: 2, draft_len: 4, branches: 1 }).unwrap();
        let mut context: Vec<u32> = (1..=8).cycle().take(40).collect();
        d.begin(&context).unwrap();
        let mut misses = 0;
        while verdict(&mut d, &mut context, false, limits) > 0 {
            misses += 1;
            context.extend([1, 2]);
            assert!(misses < 10, "the drafter kept drafting after {misses} misses");
        }
        // Steps without a draft still age the record; the estimate returns toward the prior and drafting
        // resumes.
        let mut quiet = 0;
        loop {
            context.extend([1, 2]);
            let tree = d.propose(&context, limits).unwrap();
            if !tree.is_empty() {
                break;
            }
            quiet += 1;
            context.push(200 + quiet);
            d.observe(&context, DraftFeedback { proposed: 0, depth: 0, accepted: 0 }).unwrap();
            assert!(quiet < 200, "drafting never resumed");
        }
        assert!(quiet > 3, "resumed after only {quiet} steps");
    }
}
