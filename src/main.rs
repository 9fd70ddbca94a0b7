//! The `rl-v2` command: parses the command line, loads settings, starts logging and calls the
//! library.

use std::process::ExitCode;

fn main() -> ExitCode {
    rl_v2::cli::main()
}
