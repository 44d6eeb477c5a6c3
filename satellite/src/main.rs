//! `archipel-satellite`: set up, run and administer a satellite (see [`archipel_satellite::cli`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    archipel_satellite::cli::main_with_args("archipel-satellite", std::env::args().skip(1))
}
