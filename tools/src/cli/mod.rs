//! Command-line arguments and the subcommands.

mod bench_command;
mod compile_command;
mod diagnostics;
mod inspect_command;
mod ir_command;
mod loading;
mod logits_command;
mod onnx_conformance_command;
mod prompt;
mod run_command;
mod sampling_args;
mod speculation;

use clap::{Parser, Subcommand};

/// kiln: an ahead-of-time compiler for language models.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log what kiln does on stderr: `-v` for stages and timings, `-vv` for details (`RUST_LOG` overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

impl Cli {
    /// How many `-v` were given.
    pub fn verbosity(&self) -> u8 {
        self.verbose
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compile a model into a `.kiln` artifact.
    Compile(compile_command::CompileArgs),
    /// Generate text from a model or an artifact.
    Run(run_command::RunArgs),
    /// Print the next-token logits after a prompt.
    Logits(logits_command::LogitsArgs),
    /// Show what is inside an artifact and how it was made.
    Inspect(inspect_command::InspectArgs),
    /// Parse, verify and print a model's IR, optionally through a pass pipeline.
    Ir(ir_command::IrArgs),
    /// Measure prefill and decode throughput (and the speedup of speculative decoding).
    Bench(bench_command::BenchArgs),
    /// Run the ONNX node conformance suite (see tools/gen_onnx_node_suite.py) on the CPU executor.
    OnnxConformance(onnx_conformance_command::OnnxConformanceArgs),
}

pub fn run(cli: Cli) -> miette::Result<()> {
    match cli.command {
        Command::Compile(args) => compile_command::run(args),
        Command::Run(args) => run_command::run(args),
        Command::Logits(args) => logits_command::run(args),
        Command::Inspect(args) => inspect_command::run(args),
        Command::Ir(args) => ir_command::run(args),
        Command::Bench(args) => bench_command::run(args),
        Command::OnnxConformance(args) => onnx_conformance_command::run(args),
    }
}
