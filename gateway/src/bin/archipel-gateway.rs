//! `archipel-gateway`: the S3 gateway; see `archipel_gateway::cli`.

fn main() -> std::process::ExitCode {
    archipel_gateway::cli::main_with_args(std::env::args())
}
