//! `kiln inspect`: what is inside an artifact, and how it was made.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use kiln_ir::WeightPayload;
use kiln_runtime::Artifact;
use miette::{IntoDiagnostic, Result, miette};

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The artifact.
    artifact: PathBuf,
    /// Print one JSON object (the schema is in README.md) instead of text.
    #[arg(long)]
    json: bool,
}

/// Tensors, elements and bytes of the weights of one dtype.
#[derive(Default, serde::Serialize)]
struct DtypeTotals {
    tensors: u64,
    parameters: u64,
    bytes: u64,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let a = Artifact::load(&args.artifact).map_err(|e| miette!("{e}"))?;
    let mut by_dtype: BTreeMap<String, DtypeTotals> = BTreeMap::new();
    for (_, w) in a.weights().iter() {
        let t = by_dtype.entry(w.ty.dtype.to_string()).or_default();
        t.tensors += 1;
        t.parameters += w.ty.shape.num_elements().unwrap_or(0);
        t.bytes += match &w.payload {
            WeightPayload::Dense(b) => b.len(),
            WeightPayload::Quantized { data, scales, zeros } => {
                data.len() + scales.len() + zeros.as_ref().map_or(0, |z| z.len())
            }
        } as u64;
    }
    let weight_bytes: u64 = by_dtype.values().map(|t| t.bytes).sum();
    let kernels: Vec<_> = a.kernel_entries().collect();
    let kernel_bytes: u64 = kernels.iter().map(|k| k.bytes).sum();
    let r = a.record();
    let meta = a.meta();
    let targets: Vec<String> = a.targets().iter().map(ToString::to_string).collect();
    let g = a.graph();
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "path": args.artifact,
            "bytes": a.file_len(),
            "format_version": a.format_version(),
            "writer": a.writer(),
            "model": {
                "architecture": r.architecture,
                "source": r.source,
                "parameters": r.parameters,
                "vocab_size": r.vocab_size,
                "max_position": r.max_position,
                "bos_token_id": r.bos_token_id,
                "eos_token_ids": r.eos_token_ids,
                "tokenizer": meta.tokenizer_json.is_some(),
                "chat_template": meta.chat_template.is_some(),
            },
            "graph": { "name": g.name, "nodes": g.order().len(), "inputs": g.inputs().len(), "outputs": g.outputs().len() },
            "weights": { "tensors": a.weights().len(), "bytes": weight_bytes, "by_dtype": by_dtype },
            "pipeline": a.pipeline(),
            "targets": targets,
            "kernels": { "count": kernels.len(), "bytes": kernel_bytes, "modules": kernels },
            "content_hash": a.content_hash(),
            "integrity_hash": a.integrity_hash(),
        });
        writeln!(out, "{json}").into_diagnostic()?;
        return Ok(());
    }
    let arch = if r.architecture.is_empty() { "(not recorded)" } else { r.architecture.as_str() };
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(text, "artifact       {} ({:.1} MB)", args.artifact.display(), a.file_len() as f64 / 1e6);
    let _ = writeln!(text, "format         version {} (written by {})", a.format_version(), a.writer().unwrap_or("?"));
    let _ = writeln!(text, "model          {arch} from {}", r.source);
    let _ = writeln!(
        text,
        "parameters     {} ({:.2}M), vocabulary {}",
        r.parameters,
        r.parameters as f64 / 1e6,
        r.vocab_size
    );
    let _ = writeln!(
        text,
        "text           tokenizer {}, chat template {}, eos ids {:?}",
        if meta.tokenizer_json.is_some() { "yes" } else { "no" },
        if meta.chat_template.is_some() { "yes" } else { "no" },
        r.eos_token_ids
    );
    let _ = writeln!(text, "graph          @{}: {} nodes", g.name, g.order().len());
    let _ = writeln!(text, "weights        {} tensors, {:.1} MB", a.weights().len(), weight_bytes as f64 / 1e6);
    for (dtype, t) in &by_dtype {
        let _ = writeln!(
            text,
            "  {dtype:<12} {:>5} tensors {:>14} parameters {:>10.1} MB",
            t.tensors,
            t.parameters,
            t.bytes as f64 / 1e6
        );
    }
    let p = a.pipeline();
    let disabled =
        if p.disabled.is_empty() { String::new() } else { format!(" (disabled: {})", p.disabled.join(", ")) };
    let _ = writeln!(text, "pipeline       {}: {}{disabled}", p.name, p.passes.join(", "));
    let _ = writeln!(text, "targets        {}", targets.join(", "));
    let _ = writeln!(text, "kernels        {} ({} bytes)", kernels.len(), kernel_bytes);
    for k in &kernels {
        let _ = writeln!(text, "  {} {} {} bytes", k.module, k.target, k.bytes);
    }
    let _ = writeln!(text, "content hash   {}", a.content_hash());
    let _ = writeln!(text, "integrity      {} (verified)", a.integrity_hash());
    out.write_all(text.as_bytes()).into_diagnostic()
}
