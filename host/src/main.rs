//! The `pitstop` command: `serve` runs the platform; the other subcommands
//! talk to a running one through its admin API. Its command line lives in
//! the library, `pitstop_host::cli`.

fn main() -> std::process::ExitCode {
    pitstop_host::cli::main()
}
