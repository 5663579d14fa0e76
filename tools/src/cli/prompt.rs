//! The prompt of `kiln run` and `kiln logits`: token ids given directly, text encoded with the model's
//! tokenizer, or one user message rendered through the model's chat template first.

use std::path::Path;

use kiln_ir::Model;
use kiln_runtime::{ChatMessage, ChatTemplate, TextTokenizer};
use miette::{Result, miette};

#[derive(clap::Args, Debug)]
pub struct PromptArgs {
    /// Prompt as comma-separated token ids, e.g. `1,2,3`.
    #[arg(long, value_name = "IDS", conflicts_with_all = ["prompt", "chat"])]
    prompt_ids: Option<String>,
    /// Prompt text, encoded with the model's tokenizer.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Send --prompt as one user message through the model's chat template.
    #[arg(long, requires = "prompt")]
    chat: bool,
}

impl PromptArgs {
    /// Whether a prompt was given at all.
    pub fn is_given(&self) -> bool {
        self.prompt.is_some() || self.prompt_ids.is_some()
    }
}

/// The model's tokenizer, if it has one.
pub fn model_tokenizer(model: &Model, path: &Path) -> Result<Option<TextTokenizer>> {
    model
        .meta
        .tokenizer_json
        .as_deref()
        .map(|json| TextTokenizer::from_json(json).map_err(|e| miette!("{}: {e}", path.display())))
        .transpose()
}

/// The prompt's token ids.
pub fn prompt_ids(
    args: &PromptArgs,
    model: &Model,
    tokenizer: Option<&TextTokenizer>,
    path: &Path,
) -> Result<Vec<u32>> {
    let text = match (&args.prompt_ids, &args.prompt) {
        (Some(ids), _) => return parse_ids(ids),
        (None, Some(text)) => text,
        (None, None) => return Err(miette!("give a prompt: --prompt TEXT, or token ids with --prompt-ids 1,2,3")),
    };
    let Some(tokenizer) = tokenizer else {
        return Err(miette!(
            "{}: this model has no tokenizer, so --prompt cannot be encoded; pass token ids with --prompt-ids 1,2,3 \
             (a `.kir` graph takes its tokenizer from a NAME.tokenizer.json file beside it)",
            path.display()
        ));
    };
    let ids = if args.chat {
        let Some(source) = model.meta.chat_template.as_deref() else {
            return Err(miette!(
                "{}: this model has no chat template, so --chat cannot format the prompt; leave out --chat to send \
                 --prompt as plain text",
                path.display()
            ));
        };
        let token_text = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id)).unwrap_or_default();
        let bos = token_text(model.meta.bos_token_id);
        let eos = token_text(model.meta.eos_token_ids.first().copied());
        let template = ChatTemplate::new(source, &bos, &eos).map_err(|e| miette!("{}: {e}", path.display()))?;
        let text = template
            .render(&[ChatMessage::user(text.as_str())], true)
            .map_err(|e| miette!("{}: {e}", path.display()))?;
        // The template writes the special tokens (BOS included) itself, as `transformers` assumes.
        tokenizer.encode(&text, false)
    } else {
        tokenizer.encode(text, true)
    }
    .map_err(|e| miette!("{}: {e}", path.display()))?;
    if ids.is_empty() {
        return Err(miette!("--prompt {text:?} encodes to no tokens; give a prompt with some text"));
    }
    Ok(ids)
}

fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(|t| {
            t.trim().parse::<u32>().map_err(|_| miette!("--prompt-ids: `{t}` is not a token id (expected e.g. 1,2,3)"))
        })
        .collect()
}
