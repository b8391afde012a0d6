//! The `shipshape` binary: parses the command line, loads config, and runs the chosen command.

use std::process::ExitCode;

use clap::Parser;
use shipshape::{
    cli::{Cli, Command},
    config::{Config, Sources},
    db, healthcheck, startup, telemetry,
};

/// Exit code for configuration errors (as documented for operators and probes).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    let config = Config::load(&Sources::from_env());
    if let Command::Healthcheck { url, timeout } = command {
        // Works even with a broken config: the probe then checks the default port.
        let port = config.as_ref().map_or(8080, |c| c.http.listen.port());
        let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{port}/readyz"));
        return run_async(async move { healthcheck::check(&url, timeout).await });
    }
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shipshape: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match command {
        Command::Config => {
            print!("{}", config.redacted_toml());
            ExitCode::SUCCESS
        }
        Command::Migrate => {
            if let Err(e) = telemetry::init(&config.log) {
                eprintln!("shipshape: cannot set up logging: {e:#}");
                return ExitCode::FAILURE;
            }
            run_async(async move {
                let store = db::connect(&config.database).await?;
                tracing::info!(backend = store.backend(), "migrations applied");
                store.close().await;
                Ok(())
            })
        }
        Command::Serve | Command::Healthcheck { .. } => {
            if let Err(e) = telemetry::init(&config.log) {
                eprintln!("shipshape: cannot set up logging: {e:#}");
                return ExitCode::FAILURE;
            }
            run_async(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(
        version = shipshape::VERSION,
        revision = shipshape::GIT_REVISION,
        listen = %config.http.listen,
        config = %config.redacted_toml().replace('\n', " "),
        "starting"
    );
    let app = startup::Application::build(config).await?;
    tracing::info!(
        addr = %app.addr(),
        metrics_addr = ?app.metrics_addr(),
        backend = app.state().store.backend(),
        "ready to serve"
    );
    app.run(startup::shutdown_signal()).await
}

fn run_async(fut: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shipshape: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logging may not be set up (healthcheck): say it on stderr, and in the log.
            tracing::error!(error = %format!("{e:#}"), "exiting with an error");
            eprintln!("shipshape: {e:#}");
            ExitCode::FAILURE
        }
    }
}
