//! Command-line arguments and the subcommands.

mod diagnostics;
mod ir_command;
mod logits_command;
mod onnx_conformance_command;
mod prompt;
mod run_command;

use clap::{Parser, Subcommand};

/// kiln: an ahead-of-time compiler for language models.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse, verify and print a model's IR, optionally through a pass pipeline.
    Ir(ir_command::IrArgs),
    /// Generate text from a model on the CPU.
    Run(run_command::RunArgs),
    /// Print the next-token logits after a prompt.
    Logits(logits_command::LogitsArgs),
    /// Run the ONNX node conformance suite (see tools/gen_onnx_node_suite.py) on the CPU executor.
    OnnxConformance(onnx_conformance_command::OnnxConformanceArgs),
}

pub fn run(cli: Cli) -> miette::Result<()> {
    match cli.command {
        Command::Ir(args) => ir_command::run(args),
        Command::Run(args) => run_command::run(args),
        Command::Logits(args) => logits_command::run(args),
        Command::OnnxConformance(args) => onnx_conformance_command::run(args),
    }
}
