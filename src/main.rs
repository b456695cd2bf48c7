//! The `hostgate` command. Everything happens in the library; see `hostgate_proxy::cli`.

fn main() -> std::process::ExitCode {
    hostgate_proxy::cli::main()
}
