//! The `kiln` command-line tool: a thin shell over the `kiln` driver library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        // `--help` and `--version` are successes; every usage error is bad input, which the CLI contract
        // (DESIGN.md section 1) answers with status 1, not clap's 2.
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(args.verbosity());
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(1)
        }
    }
}

/// `tracing` to stderr: `RUST_LOG` when set, else warnings, `-v` kiln's stages, `-vv` everything at debug.
fn init_logging(verbosity: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(match verbosity {
            0 => "warn",
            1 => "warn,kiln=info,kiln_runtime=info",
            _ => "debug",
        })
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}
