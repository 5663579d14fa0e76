//! [`NgramDrafter`]: adaptive multi-level n-gram drafting (ANPD, "Lossless Acceleration of Large
//! Language Model via Adaptive N-gram Parallel Decoding").
//!
//! For every order `n` in `1..=ngram_max`, a table maps each n-gram of the context to the tokens that
//! followed it, the most recent first. The tables are built from the prompt and extended with every
//! accepted token (never with unverified drafts). A draft continues the context token by token: the
//! longest suffix of (context + draft so far) found in a table gives the next token, falling back level by
//! level to shorter suffixes, and drafting stops where no level matches.
//!
//! The draft length adapts to recent acceptance: it grows back toward `draft_len` after fully accepted
//! drafts, shrinks to just past the accepted prefix after a partial one and halves after a rejected one;
//! after three rejected drafts in a row the drafter pauses (proposes nothing) for a few steps, doubling
//! the pause each time it happens again, so that text without repetition costs almost nothing over plain
//! decoding. In tree mode the first drafted token branches over several candidates (the successors of the
//! longest matching suffix, then of shorter ones), each continued as above, merged into a prefix tree.

use std::collections::HashMap;

use super::drafter::{DraftFeedback, DraftLimits, Drafter};
use super::tree::TokenTree;
use crate::RuntimeError;

/// Successors remembered per n-gram (the most recent ones).
const SUCCESSORS: usize = 4;

/// Rejected drafts in a row before the drafter pauses.
const MISSES_BEFORE_PAUSE: usize = 3;

/// The longest pause, in steps.
const MAX_PAUSE: usize = 16;

/// How an [`NgramDrafter`] drafts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NgramConfig {
    /// The longest n-gram order matched (ANPD's N; 5 worked best in the paper).
    pub ngram_max: usize,
    /// The longest draft (ANPD's K; 7 in the paper).
    pub draft_len: usize,
    /// Candidates tried for the first drafted token; 1 drafts a single chain.
    pub branches: usize,
}

impl Default for NgramConfig {
    fn default() -> Self {
        NgramConfig { ngram_max: 5, draft_len: 7, branches: 1 }
    }
}

/// The adaptive multi-level n-gram drafter.
#[derive(Clone, Debug)]
pub struct NgramDrafter {
    config: NgramConfig,
    /// `tables[n - 1]`: n-gram -> the tokens that followed it, the most recent first.
    tables: Vec<HashMap<Vec<u32>, Vec<u32>>>,
    /// Tokens of the context already entered in the tables.
    indexed: usize,
    /// The current draft length, adapted to acceptance.
    length: usize,
    misses: usize,
    pause: usize,
    paused_for: usize,
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
            length: config.draft_len,
            misses: 0,
            pause: 0,
            paused_for: 0,
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

    /// Up to `want` distinct next tokens for `seq`: successors of its longest suffix found in a table, then
    /// of shorter ones.
    fn candidates(&self, seq: &[u32], want: usize) -> Vec<u32> {
        let mut found = Vec::new();
        for n in (1..=self.config.ngram_max.min(seq.len())).rev() {
            if let Some(successors) = self.tables[n - 1].get(&seq[seq.len() - n..]) {
                for &t in successors {
                    if !found.contains(&t) {
                        found.push(t);
                        if found.len() == want {
                            return found;
                        }
                    }
                }
            }
        }
        found
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
        if self.paused_for > 0 {
            self.paused_for -= 1;
            return Ok(tree);
        }
        let depth = self.length.min(limits.max_depth);
        if depth == 0 {
            return Ok(tree);
        }
        // Lookups need only the last `ngram_max` tokens of context + draft.
        let tail = &context[context.len().saturating_sub(self.config.ngram_max)..];
        let mut seq = tail.to_vec();
        for first in self.candidates(context, self.config.branches) {
            seq.truncate(tail.len());
            seq.push(first);
            while seq.len() - tail.len() < depth {
                let Some(&next) = self.candidates(&seq, 1).first() else { break };
                seq.push(next);
            }
            tree.insert_path(&seq[tail.len()..], limits.max_nodes);
        }
        Ok(tree)
    }

    fn observe(&mut self, context: &[u32], feedback: DraftFeedback) -> Result<(), RuntimeError> {
        self.index(context);
        if feedback.proposed == 0 {
            return Ok(());
        }
        let k = self.config.draft_len;
        if feedback.accepted == 0 {
            self.length = (self.length / 2).max(1);
            self.misses += 1;
            if self.misses >= MISSES_BEFORE_PAUSE {
                self.pause = (self.pause * 2).clamp(1, MAX_PAUSE);
                self.paused_for = self.pause;
                self.misses = 0;
            }
        } else {
            self.misses = 0;
            self.pause = 0;
            self.length = if feedback.accepted >= feedback.depth {
                (self.length + 2).min(k)
            } else {
                (feedback.accepted + 1).clamp(2, k)
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DraftLimits = DraftLimits { max_depth: 100, max_nodes: 63 };

    #[test]
    fn drafts_from_the_longest_matching_suffix_and_learns_online() {
        let mut d = NgramDrafter::new(NgramConfig { ngram_max: 3, draft_len: 4, branches: 1 }).unwrap();
        // "1 2 3" is followed by 4 once and "3" by 9 later: the trigram wins over the unigram.
        let prompt = [1, 2, 3, 4, 5, 6, 3, 9, 1, 2, 3];
        d.begin(&prompt).unwrap();
        let t = d.propose(&prompt, LIMITS).unwrap();
        assert_eq!(t.step_tokens(3)[1..], [4, 5, 6, 3]);
        // The depth limit caps the draft.
        let t = d.propose(&prompt, DraftLimits { max_depth: 2, max_nodes: 63 }).unwrap();
        assert_eq!(t.step_tokens(3)[1..], [4, 5]);
        // Accepted tokens enter the tables: after "3 7", a later "3" prefers 7 (most recent).
        let mut context = prompt.to_vec();
        context.extend([7, 8]);
        d.observe(&context, DraftFeedback { proposed: 4, depth: 4, accepted: 0 }).unwrap();
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

    #[test]
    fn rejected_drafts_shrink_the_length_and_then_pause_drafting() {
        let mut d = NgramDrafter::new(NgramConfig { ngram_max: 2, draft_len: 8, branches: 1 }).unwrap();
        let prompt: Vec<u32> = [1, 2].repeat(10);
        d.begin(&prompt).unwrap();
        let miss = DraftFeedback { proposed: 8, depth: 8, accepted: 0 };
        assert_eq!(d.propose(&prompt, LIMITS).unwrap().len(), 8);
        d.observe(&prompt, miss).unwrap();
        assert_eq!(d.propose(&prompt, LIMITS).unwrap().len(), 4);
        d.observe(&prompt, miss).unwrap();
        assert_eq!(d.propose(&prompt, LIMITS).unwrap().len(), 2);
        d.observe(&prompt, miss).unwrap();
        assert!(d.propose(&prompt, LIMITS).unwrap().is_empty(), "paused after three misses");
        assert_eq!(d.propose(&prompt, LIMITS).unwrap().len(), 1);
        d.observe(&prompt, DraftFeedback { proposed: 1, depth: 1, accepted: 1 }).unwrap();
        assert_eq!(d.propose(&prompt, LIMITS).unwrap().len(), 3, "a full acceptance grows the draft");
    }
}
