//! The speculative-decoding options shared by `kiln run` and `kiln bench`, and the drafter they select.

use std::path::{Path, PathBuf};

use kiln_runtime::decoding::{
    DEFAULT_MODEL_DRAFT_LEN, DecoderExecutor, Drafter, ModelDrafter, NgramConfig, NgramDrafter, has_tree_mask,
};
use miette::{Result, miette};

use super::loading::{Device, cpu_executor, open_prepared};
use kiln::Progress;

#[derive(clap::Args, Debug, Clone)]
pub struct SpeculateArgs {
    /// Speculative decoding: `none`, `ngram` (adaptive n-gram drafting from the context), `tree` (n-gram
    /// drafts branching into a token tree verified in one step), or `draft:PATH` (a smaller model with the
    /// same tokenizer drafts). Greedy output is identical to `none`; sampling keeps its distribution.
    #[arg(long, default_value = "none")]
    pub speculate: Speculate,
    /// The longest draft per step [default: 16 for `ngram` and `tree`, which shorten their drafts where
    /// they fail; 8 for `draft:PATH`].
    #[arg(long)]
    pub draft_len: Option<usize>,
    /// The longest n-gram the n-gram drafters match.
    #[arg(long, default_value_t = 5)]
    pub ngram_max: usize,
    /// Candidates per tree level (`tree`: first-token branches, default 3; `draft:PATH`: the draft model's
    /// top tokens per level, default 1, a chain).
    #[arg(long)]
    pub branches: Option<usize>,
}

/// The `--speculate` choice.
#[derive(Clone, Debug, PartialEq)]
pub enum Speculate {
    None,
    Ngram,
    Tree,
    Draft(PathBuf),
}

impl std::str::FromStr for Speculate {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Speculate, String> {
        match s {
            "none" => Ok(Speculate::None),
            "ngram" => Ok(Speculate::Ngram),
            "tree" => Ok(Speculate::Tree),
            _ => match s.strip_prefix("draft:") {
                Some("") => Err("`draft:` needs the draft model's path, as in `draft:models/small`".to_string()),
                Some(path) => Ok(Speculate::Draft(PathBuf::from(path))),
                None => Err(format!("`{s}` is not one of none, ngram, tree, draft:PATH")),
            },
        }
    }
}

impl Speculate {
    pub fn name(&self) -> String {
        match self {
            Speculate::None => "none".to_string(),
            Speculate::Ngram => "ngram".to_string(),
            Speculate::Tree => "tree".to_string(),
            Speculate::Draft(p) => format!("draft:{}", p.display()),
        }
    }
}

impl SpeculateArgs {
    /// The drafter `--speculate` asks for (`None` for plain decoding), checked against the target. A
    /// draft model (a model or an artifact) runs on the CPU, through `pipeline` when it is a model.
    pub fn drafter(
        &self,
        target: &dyn DecoderExecutor,
        vocab: u64,
        pipeline: Option<&str>,
        path: &Path,
    ) -> Result<Option<Box<dyn Drafter>>> {
        let ngram = |branches: usize| -> Result<Option<Box<dyn Drafter>>> {
            let draft_len = self.draft_len.unwrap_or(NgramConfig::default().draft_len);
            let config = NgramConfig { ngram_max: self.ngram_max, draft_len, branches };
            Ok(Some(Box::new(NgramDrafter::new(config).map_err(|e| miette!("{e}"))?)))
        };
        match &self.speculate {
            Speculate::None => Ok(None),
            Speculate::Ngram => ngram(1),
            Speculate::Tree => {
                if !has_tree_mask(target.graph()) {
                    return Err(miette!(
                        "{}: --speculate tree needs a decoder graph with a `tree_mask: bool[seq, seq]` input; this \
                         graph has only ids and positions (use --speculate ngram)",
                        path.display()
                    ));
                }
                ngram(self.branches.unwrap_or(3))
            }
            Speculate::Draft(draft_path) => {
                let branches = self.branches.unwrap_or(1);
                if branches > 1 && !has_tree_mask(target.graph()) {
                    return Err(miette!(
                        "{}: --branches {branches} drafts token trees, which need a decoder graph with a `tree_mask` \
                         input",
                        path.display()
                    ));
                }
                let draft = open_prepared(draft_path, None, pipeline, Device::Cpu, &Progress::hidden())?;
                // A `.kir` graph may not know its vocabulary (0); the loop still refuses out-of-range drafts.
                if draft.meta.vocab_size != vocab && draft.meta.vocab_size != 0 && vocab != 0 {
                    return Err(miette!(
                        "{}: the draft model has a vocabulary of {} tokens but the target has {vocab}; they must \
                         share a tokenizer",
                        draft_path.display(),
                        draft.meta.vocab_size
                    ));
                }
                let exec = cpu_executor(draft, draft_path)?;
                let draft_len = self.draft_len.unwrap_or(DEFAULT_MODEL_DRAFT_LEN);
                let drafter = ModelDrafter::new(exec, draft_len, branches)
                    .map_err(|e| miette!("{}: {e}", draft_path.display()))?;
                Ok(Some(Box::new(drafter)))
            }
        }
    }
}
