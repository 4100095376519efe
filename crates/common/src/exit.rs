//! How a binary reports the end of its run.
//!
//! A failed start-up prints exactly one line naming what is wrong (with
//! its causes joined by `: `) and exits non-zero, instead of a panic and a
//! backtrace.

use std::process::ExitCode;

pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let line = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
