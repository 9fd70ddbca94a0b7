//! The `rl-v2` command: parses the command line, loads settings, starts logging and calls the
//! library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
