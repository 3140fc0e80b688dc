//! `trireme`: the operator CLI. Everything but starting up is in
//! [`trireme_cli`].

use std::process::ExitCode;

use trireme_cli as cli;

fn main() -> ExitCode {
    let args = cli::parse();
    trireme_net::logging::init(&args.global.log, trireme_net::logging::LogFormat::Text);
    // Multi-threaded: when the controller refuses this certificate, its TLS
    // alert reaches the failing RPC more often than on one thread.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    cli::exit_code(rt.block_on(cli::run(args)))
}
