//! Command line: `serve` (default), `migrate`, `healthcheck`, `config`, `token`.

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shipshape",
    version = crate::LONG_VERSION,
    about = "Items REST service: JSON API on /v1/items, probes on /healthz and /readyz, metrics on /metrics",
    after_help = "Configuration: defaults < TOML file ($SHIPSHAPE_CONFIG, else ./shipshape.toml if present) \
                  < environment SHIPSHAPE_<SECTION>__<KEY> (e.g. SHIPSHAPE_DATABASE__URL). \
                  Run `shipshape config` to see the effective values."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (default): applies migrations, serves until SIGTERM/SIGINT.
    Serve {
        /// Local use: authenticate with a random key made for this process only, and print
        /// one bearer token for it to stderr (same as auth.ephemeral_key = true). Refused with
        /// a configured key or a PostgreSQL database.
        #[arg(long)]
        ephemeral_key: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Exit 0 only if the service's /readyz answers 200 in time (for exec probes; no curl needed).
    Healthcheck {
        /// URL to check [default: http://127.0.0.1:<http.listen port>/readyz]
        #[arg(long)]
        url: Option<String>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print the effective configuration as TOML, secrets redacted.
    Config,
    /// Mint a bearer token (HS256, with the configured auth.hs256_secret) for local use.
    /// Needs no running service.
    Token {
        /// The `sub` claim: who the token is for.
        #[arg(long)]
        sub: String,
        /// Scope(s) to grant, e.g. `items:read`, `items:write`; repeatable.
        #[arg(long = "scope", default_values_t = [String::from("items:read")])]
        scopes: Vec<String>,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}
