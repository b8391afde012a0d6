//! The `shipshape` binary: parses the command line, loads config, and runs the chosen command.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shipshape::{
    auth,
    cli::{Cli, Command},
    config::{Config, Purpose, Sources, keys},
    healthcheck, items, metrics, startup, telemetry,
};

/// mimalloc instead of glibc's malloc: allocation and free were a fifth of the instructions of a
/// health request (docs/performance.md#health-and-the-middleware-stack).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration errors (as documented for operators and probes).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve {
        ephemeral_key: false,
    });
    let mut sources = Sources::from_env();
    match command {
        Command::Serve { ephemeral_key } => sources.ephemeral_key_flag = ephemeral_key,
        // Commands that serve nothing need no key.
        _ => sources.purpose = Purpose::Offline,
    }
    let config = Config::load(&sources);
    if let Command::Healthcheck { url, timeout } = command {
        // Works even with a broken config: the probe then checks the default port.
        let port = Config::listen_addr(&Sources::from_env()).map_or(8080, |a| a.port());
        let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{port}/readyz"));
        return run_async(async move { healthcheck::check(&url, timeout).await });
    }
    let mut config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shipshape: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match command {
        Command::Config => {
            print!("{}", config.describe_toml());
            ExitCode::SUCCESS
        }
        Command::Token { sub, scopes, ttl } => token(&config, &sub, &scopes, ttl),
        Command::Migrate => {
            let Some(_telemetry) = init_telemetry(&config, false) else {
                return ExitCode::FAILURE;
            };
            run_async(async move {
                let store_metrics = metrics::Metrics::new().store();
                let storage = items::store::connect(&config.database, store_metrics).await?;
                tracing::info!(
                    backend = storage.pool.backend().name(),
                    "migrations applied"
                );
                storage.items.close().await;
                Ok(())
            })
        }
        Command::Serve { .. } | Command::Healthcheck { .. } => {
            let Some(telemetry) = init_telemetry(&config, true) else {
                return ExitCode::FAILURE;
            };
            if config.auth.ephemeral_key
                && let Err(code) = ephemeral_key(&mut config)
            {
                return code;
            }
            let code = run_async(serve(config, telemetry.policy()));
            telemetry.shutdown();
            code
        }
    }
}

/// Logging (and, when `export`, span export); `None` after saying why on stderr.
fn init_telemetry(config: &Config, export: bool) -> Option<telemetry::Telemetry> {
    let no_export = shipshape::config::TelemetryConfig::default();
    let traces = if export {
        &config.telemetry
    } else {
        &no_export
    };
    match telemetry::init(&config.log, traces, export) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("shipshape: cannot set up logging: {e:#}");
            None
        }
    }
}

/// How long the token printed for an ephemeral key is valid.
const EPHEMERAL_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// `--ephemeral-key`: installs a fresh random HS256 key for this process and prints one token
/// for it to stderr (never to the log: the log only says that an ephemeral key is in use).
fn ephemeral_key(config: &mut Config) -> Result<(), ExitCode> {
    let secret = keys::ephemeral_secret().map_err(|e| {
        eprintln!("shipshape: auth.ephemeral_key: cannot read the OS random number generator: {e}");
        ExitCode::FAILURE
    })?;
    let scopes = [auth::SCOPE_READ.to_owned(), auth::SCOPE_WRITE.to_owned()];
    let token = config
        .auth
        .use_hs256_secret(secret)
        .and_then(|()| auth::mint_hs256(&config.auth, "local", &scopes, EPHEMERAL_TOKEN_TTL))
        .map_err(|e| {
            eprintln!("shipshape: cannot mint a token: key `{}`: {e}", e.key);
            ExitCode::FAILURE
        })?;
    let port = config.http.listen.port();
    let rule = "=".repeat(78);
    eprintln!(
        "{rule}\n\
         EPHEMERAL KEY (local use only): auth uses a random key made for this process.\n\
         It dies with the process: after a restart this token no longer works, and no other\n\
         instance accepts it. Bearer token (sub local, scopes {}, valid {}):\n\
         \n{token}\n\n\
         e.g.  curl -H \"Authorization: Bearer $TOKEN\" http://localhost:{port}/v1/items\n\
         {rule}",
        scopes.join(" "),
        humantime::format_duration(EPHEMERAL_TOKEN_TTL),
    );
    let valid_for_s = EPHEMERAL_TOKEN_TTL.as_secs();
    tracing::warn!(
        valid_for_s,
        "auth.ephemeral_key: authenticating with a random key made for this process only; \
         its token was printed to stderr; tokens stop working when the process exits"
    );
    Ok(())
}

/// `shipshape token`: prints an HS256 token signed with the configured secret.
fn token(config: &Config, sub: &str, scopes: &[String], ttl: std::time::Duration) -> ExitCode {
    let scopes: Vec<String> = scopes
        .iter()
        .flat_map(|s| s.split([' ', ',']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if sub.is_empty() || ttl.is_zero() {
        eprintln!("shipshape: token needs a non-empty --sub and a --ttl greater than 0");
        return ExitCode::from(EXIT_CONFIG);
    }
    match auth::mint_hs256(&config.auth, sub, &scopes, ttl) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shipshape: cannot mint a token: key `{}`: {e}", e.key);
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn serve(config: Config, trace: telemetry::TracePolicy) -> anyhow::Result<()> {
    tracing::info!(
        version = shipshape::VERSION,
        revision = shipshape::GIT_REVISION,
        listen = %config.http.listen,
        config = %config.redacted_toml().replace('\n', " "),
        "starting"
    );
    let app = startup::Application::build(config, trace).await?;
    tracing::info!(
        addr = %app.addr(),
        metrics_addr = ?app.metrics_addr(),
        backend = app.state().pool.backend().name(),
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
