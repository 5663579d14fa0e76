//! `kiln ir`: parse (or import), verify, optionally run a pass pipeline, and print the IR.

use std::path::PathBuf;

use kiln_passes::manager::PrintAfter;
use miette::{Result, miette};

use super::diagnostics::report;

#[derive(clap::Args, Debug)]
pub struct IrArgs {
    /// The model: a Hugging Face directory, a `.gguf` file, a `.kir` graph, or a `.kiln` artifact (its
    /// compiled graph).
    model: PathBuf,
    /// Weights for a `.kir` graph (default: the `.safetensors` file of the same name, if present).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The pass pipeline to run before printing (`O0` runs none).
    #[arg(long, default_value = "O0")]
    pipeline: String,
    /// Print the IR after this pass, or after every pass with `all`.
    #[arg(long, value_name = "PASS|all")]
    print_after: Option<String>,
    /// Leave this pass out of the pipeline (repeatable).
    #[arg(long = "disable-pass", value_name = "PASS")]
    disable_pass: Vec<String>,
    /// Print per-pass timings to stderr.
    #[arg(long)]
    timings: bool,
}

pub fn run(args: IrArgs) -> Result<()> {
    let mut model = kiln::load_model(&args.model, args.weights.as_deref()).map_err(report)?;
    let weights = (!model.weights.is_empty()).then_some(&model.weights);
    kiln_ir::verify(&model.graph, weights).map_err(|e| {
        let n = e.errors.len();
        miette!("{}: the graph is invalid ({n} error{}):\n{e}", args.model.display(), if n == 1 { "" } else { "s" })
    })?;

    let mut manager = kiln_passes::pipelines::pipeline(&args.pipeline).map_err(|e| miette!("{e}"))?;
    for name in &args.disable_pass {
        manager.disable(name).map_err(|e| miette!("{e}"))?;
    }
    if let Some(which) = &args.print_after {
        let which = if which == "all" { PrintAfter::All } else { PrintAfter::Pass(which.clone()) };
        manager.print_after(which).map_err(|e| miette!("{e}"))?;
        manager.set_print_sink(|pass: &str, text: &str| print!("// ----- after {pass} -----\n{text}"));
    }
    let (report, notes) = kiln::lowering::run_pipeline(&mut model, &mut manager).map_err(|e| miette!("{e}"))?;
    // What the passes could not do and why (a raising pattern that did not match), for the person reading
    // the IR; on stderr, so that stdout stays the IR text.
    for note in &notes {
        eprintln!("note: {note}");
    }
    if args.timings {
        eprint!("{report}");
    }
    if args.print_after.is_none() {
        print!("{}", kiln_ir::text::print(&model.graph));
    }
    Ok(())
}
