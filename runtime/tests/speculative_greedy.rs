//! Greedy speculative decoding on the tiny decoders of `common`: the same tokens as plain greedy decoding
//! with and without a tree-mask input, chains on a graph without the mask, a clear error for trees there,
//! stop tokens and the token budget inside an accepted draft, and the speculation stats.

mod common;

use common::{TINY, tiny_executor, tiny_tree_decoder, tiny_weights};
use std::cell::Cell;
use std::rc::Rc;

use kiln_ir::Graph;
use kiln_runtime::decoding::{
    DecoderExecutor, DraftFeedback, DraftLimits, Drafter, ModelDrafter, NgramConfig, NgramDrafter, TokenTree,
    generate_speculative,
};
use kiln_runtime::{CpuExecutor, GenerateConfig, RuntimeError, Sampling, generate};

fn greedy(max_new_tokens: usize, stop_tokens: Vec<u32>) -> GenerateConfig {
    GenerateConfig { max_new_tokens, sampling: Sampling::Greedy, stop_tokens }
}

fn tree_executor(seed: u64) -> CpuExecutor {
    let w = tiny_weights(&TINY, seed);
    CpuExecutor::new(tiny_tree_decoder(&TINY, &w), w).unwrap()
}

/// Proposes whatever it is given: the plain greedy continuation (so every draft is accepted), with a
/// wrong sibling first at every level when `decoys` is set.
struct Oracle {
    answer: Vec<u32>,
    prompt_len: usize,
    decoys: bool,
}

impl Drafter for Oracle {
    fn begin(&mut self, prompt: &[u32]) -> Result<(), RuntimeError> {
        self.prompt_len = prompt.len();
        Ok(())
    }

    fn propose(&mut self, context: &[u32], limits: DraftLimits) -> Result<TokenTree, RuntimeError> {
        let done = context.len() - self.prompt_len;
        let path: Vec<u32> = self.answer[done..].iter().take(limits.max_depth.min(5)).copied().collect();
        let mut tree = TokenTree::new();
        for d in 0..path.len() {
            if self.decoys {
                tree.insert_path(&[&path[..d], &[(path[d] + 1) % TINY.vocab as u32]].concat(), limits.max_nodes);
            }
            tree.insert_path(&path[..=d], limits.max_nodes);
        }
        Ok(tree)
    }

    fn observe(&mut self, _context: &[u32], _feedback: DraftFeedback) -> Result<(), RuntimeError> {
        Ok(())
    }
}

#[test]
fn speculation_emits_the_plain_greedy_tokens() {
    let prompt = [3, 17, 42, 5, 3, 17, 42, 5, 3, 17];
    for with_mask in [false, true] {
        let mut exec = if with_mask { tree_executor(1) } else { tiny_executor(1, true) };
        let plain = generate(&mut exec, &prompt, &greedy(40, vec![])).unwrap();
        let mut drafters: Vec<Box<dyn Drafter>> = vec![
            Box::new(NgramDrafter::new(NgramConfig::default()).unwrap()),
            Box::new(ModelDrafter::new(tiny_executor(2, true), 4, 1).unwrap()),
            Box::new(Oracle { answer: plain.tokens.clone(), prompt_len: 0, decoys: false }),
        ];
        if with_mask {
            drafters.push(Box::new(NgramDrafter::new(NgramConfig { branches: 3, ..NgramConfig::default() }).unwrap()));
            drafters.push(Box::new(ModelDrafter::new(tiny_executor(2, true), 3, 3).unwrap()));
            drafters.push(Box::new(Oracle { answer: plain.tokens.clone(), prompt_len: 0, decoys: true }));
        }
        for (i, d) in drafters.iter_mut().enumerate() {
            let spec = generate_speculative(&mut exec, d.as_mut(), &prompt, &greedy(40, vec![])).unwrap();
            assert_eq!(spec.tokens, plain.tokens, "mask {with_mask}, drafter {i}");
            assert_eq!(exec.kv_len(), prompt.len() + 39, "the cache holds the sequence but the last token");
        }
        // The oracle's drafts are all accepted: 5 drafts + a bonus per step, 6 steps from 1 to 37 tokens,
        // then 2 drafts (the budget) + a bonus.
        let mut oracle = Oracle { answer: plain.tokens.clone(), prompt_len: 0, decoys: with_mask };
        let s = generate_speculative(&mut exec, &mut oracle, &prompt, &greedy(40, vec![])).unwrap().stats;
        assert_eq!(s.accepted_per_step(), 39.0 / 7.0, "39 tokens in 7 decode steps: {s:?}");
        assert_eq!(s.steps, 8);
        assert_eq!(s.draft_tokens, if with_mask { 2 * 32 } else { 32 });
        assert_eq!(s.accepted_draft_tokens, 32);
        assert_eq!(s.acceptance_rate(), if with_mask { 0.5 } else { 1.0 });
        assert_eq!(s.new_tokens, 40);
    }
}

#[test]
fn stop_tokens_and_the_budget_cut_an_accepted_draft() {
    let prompt = [3, 17, 42, 5];
    let mut exec = tiny_executor(1, true);
    let plain = generate(&mut exec, &prompt, &greedy(20, vec![])).unwrap().tokens;
    let stop = plain[7];
    let first_stop = plain.iter().position(|&t| t == stop).unwrap();
    let mut oracle = Oracle { answer: plain.clone(), prompt_len: 0, decoys: false };
    let spec = generate_speculative(&mut exec, &mut oracle, &prompt, &greedy(20, vec![stop])).unwrap();
    assert_eq!(spec.tokens, plain[..=first_stop]);
    let spec = generate_speculative(&mut exec, &mut oracle, &prompt, &greedy(9, vec![])).unwrap();
    assert_eq!(spec.tokens, plain[..9]);
}

#[test]
fn a_graph_without_a_tree_mask_refuses_trees_with_a_clear_error() {
    let mut exec = tiny_executor(1, true);
    let prompt = [3, 17, 42, 5];
    let plain = generate(&mut exec, &prompt, &greedy(10, vec![])).unwrap();
    let mut oracle = Oracle { answer: plain.tokens, prompt_len: 0, decoys: true };
    let e = generate_speculative(&mut exec, &mut oracle, &prompt, &greedy(10, vec![])).unwrap_err().to_string();
    assert!(e.contains("tree_mask") && e.contains("chain"), "{e}");
}

/// A draft model that counts its steps.
struct Counted {
    exec: CpuExecutor,
    steps: Rc<Cell<usize>>,
}

impl DecoderExecutor for Counted {
    fn graph(&self) -> &Graph {
        self.exec.graph()
    }
    fn step(
        &mut self,
        ids: &[u32],
        positions: &[i64],
        mask: Option<&[bool]>,
    ) -> Result<(Vec<f32>, usize), RuntimeError> {
        self.steps.set(self.steps.get() + 1);
        DecoderExecutor::step(&mut self.exec, ids, positions, mask)
    }
    fn kv_len(&self) -> usize {
        self.exec.kv_len()
    }
    fn reset(&mut self) {
        self.exec.reset()
    }
    fn truncate_kv(&mut self, len: usize) -> Result<(), RuntimeError> {
        self.exec.truncate_kv(len)
    }
    fn compact_kv(&mut self, keep: &[usize]) -> Result<(), RuntimeError> {
        self.exec.compact_kv(keep)
    }
    fn max_exact_step_rows(&self) -> usize {
        self.exec.max_exact_step_rows()
    }
}

/// A draft model that guesses the target's tokens (the target itself) drafts long chains; one that does
/// not (another random model) soon stops drafting and is then hardly run at all.
#[test]
fn the_draft_model_drafts_where_it_is_right_and_rests_where_it_is_not() {
    let prompt = [3, 17, 42, 5];
    let mut exec = tiny_executor(1, true);
    let plain = generate(&mut exec, &prompt, &greedy(80, vec![])).unwrap();
    let run = |seed: u64| {
        let steps = Rc::new(Cell::new(0));
        let draft = Counted { exec: tiny_executor(seed, true), steps: steps.clone() };
        let mut drafter = ModelDrafter::new(draft, 8, 1).unwrap();
        let mut exec = tiny_executor(1, true);
        let spec = generate_speculative(&mut exec, &mut drafter, &prompt, &greedy(80, vec![])).unwrap();
        assert_eq!(spec.tokens, plain.tokens, "draft model seed {seed}");
        (spec.stats, steps.get())
    };
    let (right, _) = run(1);
    assert!(right.accepted_per_step() > 4.0, "{right:?}");
    let (wrong, draft_steps) = run(2);
    assert!(wrong.acceptance_rate() < 0.3, "the other model is a poor draft model here: {wrong:?}");
    assert!(draft_steps * 3 < wrong.steps, "{draft_steps} draft-model steps for {} target steps", wrong.steps);
}
