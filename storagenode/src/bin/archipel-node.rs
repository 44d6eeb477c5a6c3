//! `archipel-node`: the storage node daemon; see `archipel_storagenode::cli`.

fn main() -> std::process::ExitCode {
    archipel_storagenode::cli::main_with_args(std::env::args())
}
