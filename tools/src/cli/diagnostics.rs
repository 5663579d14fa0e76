//! Turns driver errors into miette reports: parse errors underline the offending text and name the
//! file, line and column; everything else is a one-paragraph message.

use miette::{Diagnostic, NamedSource, Report, SourceSpan};

use kiln::DriverError;
use kiln_frontends::FrontendError;

/// A syntax error in a `.kir` file, shown with its source.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{file}:{line}:{column}: {message}")]
#[diagnostic(code(kiln::parse))]
struct ParseDiagnostic {
    file: String,
    line: usize,
    column: usize,
    message: String,
    #[source_code]
    src: NamedSource<String>,
    #[label("here")]
    at: SourceSpan,
}

/// The report for a driver error.
pub fn report(err: DriverError) -> Report {
    match err {
        DriverError::Frontend(FrontendError::Parse { path, src, error }) => {
            let file = path.display().to_string();
            // Point at one character (or the end of the file).
            let len = src[error.offset.min(src.len())..].chars().next().map_or(0, char::len_utf8);
            let at = SourceSpan::new(error.offset.min(src.len()).into(), len);
            Report::new(ParseDiagnostic {
                file: file.clone(),
                line: error.line,
                column: error.column,
                message: error.message,
                src: NamedSource::new(file, src),
                at,
            })
        }
        other => Report::msg(other.to_string()),
    }
}
