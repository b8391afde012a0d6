//! Configuration: figment layering (defaults < TOML file < `SHIPSHAPE_*` env) into typed values.
//!
//! Parsed once, at start: addresses, the database URL, CIDR lists, origins, the log filter and
//! the verification keys are typed values here, and every bad value is reported as one line
//! naming its key and where the value came from. This module imports nothing else of the crate.

mod database;
pub mod keys;
mod net;
mod secret;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Deserializer, Serialize};

pub use database::{Backend, DatabaseUrl, redact_url};
pub use keys::{KeyError, PinnedKey, VerificationKeys};
pub use net::{Origin, TrustedProxy};
pub use secret::Secret;

/// Environment variable naming the TOML config file.
pub const CONFIG_ENV: &str = "SHIPSHAPE_CONFIG";
/// TOML file read when `SHIPSHAPE_CONFIG` is unset and the file exists.
pub const DEFAULT_CONFIG_FILE: &str = "./shipshape.toml";
/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "SHIPSHAPE_";

/// The whole service configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub security: SecurityConfig,
    pub telemetry: TelemetryConfig,
}

/// HTTP server: listeners, limits, timeouts and shutdown phases.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the API listener.
    pub listen: SocketAddr,
    /// Optional separate listener for `/metrics` ("" = serve it on the API listener only).
    #[serde(with = "opt_addr")]
    pub metrics_listen: Option<SocketAddr>,
    /// Longest time a request may take before it is answered with 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest time a client may take to send the request head.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Idle keep-alive connections are closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest accepted request body in bytes.
    pub body_limit: usize,
    /// Requests served at once; beyond this the service sheds load with 503.
    pub max_concurrent_requests: usize,
    /// After SIGTERM, keep serving (with `/readyz` = 503) this long so load balancers catch up.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// After the drain delay, how long in-flight requests get to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Open client connections at most; further clients wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_listen: None,
            request_timeout: Duration::from_secs(15),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_limit: 64 * 1024,
            max_concurrent_requests: 512,
            drain_delay: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
            max_connections: 10_000,
        }
    }
}

/// Storage: which database, and how the pool treats it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (default) or `postgres://user:pass@host:port/db`; `file:/path` reads it
    /// from a file.
    pub url: DatabaseUrl,
    pub max_connections: u32,
    pub min_connections: u32,
    /// How long a request waits for a pooled connection before failing with 503.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Server-side limit for one statement (PostgreSQL `statement_timeout`, SQLite busy timeout).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// How long start-up keeps retrying to reach the database before giving up.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// How long `/readyz` waits for the database to answer.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
    /// SQLite group commit: at most this many writes share one transaction and fsync (1 to
    /// 1024; 1 commits each write alone). PostgreSQL groups concurrent commits itself.
    pub commit_group_max: u32,
    /// SQLite group commit: how long the writer waits for more writes once it has one (0: it
    /// takes what queued during the previous commit, adding no latency).
    #[serde(with = "humantime_serde")]
    pub commit_group_wait: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DatabaseUrl::Sqlite("./data/shipshape.db".into()),
            max_connections: 16,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(1),
            commit_group_max: 64,
            commit_group_wait: Duration::ZERO,
        }
    }
}

/// Trace export: OpenTelemetry over OTLP/HTTP, off unless an endpoint is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL (e.g. `http://otel-collector:4318`); "" = use the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variable if set, else export nothing.
    pub otlp_endpoint: String,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// Share of new traces whose spans are exported, 0.0 to 1.0 (`ParentBased(TraceIdRatio)`:
    /// a request that arrives with a sampled `traceparent` is always exported). Unset = the
    /// standard `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`, else every trace.
    pub sample_ratio: Option<f64>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "shipshape".into(),
            sample_ratio: None,
        }
    }
}

impl TelemetryConfig {
    /// The OTLP traces URL to export to, if export is on: the config key, else the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, with `/v1/traces` appended as the OTLP spec says.
    pub fn traces_endpoint(&self) -> Option<String> {
        self.export_target().map(|(url, _)| url)
    }

    /// The OTLP traces URL and where it comes from, if export is on.
    pub fn export_target(&self) -> Option<(String, OtlpSource)> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (base, source) = match self.otlp_endpoint.trim() {
            "" => {
                // The signal-specific variable is a complete URL, used as it is.
                if let Some(url) = env(OTLP_TRACES_ENDPOINT_ENV) {
                    return Some((url, OtlpSource::Env(OTLP_TRACES_ENDPOINT_ENV)));
                }
                (env(OTLP_ENDPOINT_ENV)?, OtlpSource::Env(OTLP_ENDPOINT_ENV))
            }
            configured => (configured.to_owned(), OtlpSource::Config),
        };
        let base = base.trim().trim_end_matches('/');
        let url = if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        };
        Some((url, source))
    }
}

/// Logging: output format and filter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directives, e.g. `info,sqlx=warn`.
    pub level: LogFilter,
}

/// `log.level`: directives `tracing_subscriber::EnvFilter` accepts (checked when loaded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogFilter(String);

impl LogFilter {
    pub fn parse(directives: &str) -> Result<LogFilter, String> {
        tracing_subscriber::EnvFilter::try_new(directives)
            .map(|_| LogFilter(directives.to_owned()))
            .map_err(|e| format!("not a valid filter ({e})"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for LogFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        LogFilter::parse(s)
    }
}

impl<'de> Deserialize<'de> for LogFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        LogFilter::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: LogFilter("info".into()),
        }
    }
}

/// Bearer-token (JWT) authentication of `/v1` requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require a valid token on `/v1` (default). Switch off only for local use.
    pub enabled: bool,
    /// HS256 shared secret, at least 32 bytes ("" = none); `file:/path` reads it from a file.
    pub hs256_secret: Secret,
    /// PEM public key (RSA -> RS256, P-256 -> ES256, Ed25519 -> EdDSA); "" = none.
    pub public_key_file: String,
    /// JWKS JSON file; the token's `kid` selects the key; "" = none.
    pub jwks_file: String,
    /// Required `iss` claim ("" = not checked).
    pub issuer: String,
    /// Required `aud` claim ("" = tokens must not carry an `aud`).
    pub audience: String,
    /// Clock skew tolerated for `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Let anonymous clients read items (GET/HEAD on `/v1/items*`); writes still need a token.
    pub public_reads: bool,
    /// Local mode (`serve --ephemeral-key`): a random HS256 key made for this process only,
    /// and one token for it printed to stderr at start. Refused with a configured key and with
    /// PostgreSQL (replicas would each have their own key).
    pub ephemeral_key: bool,
    /// The verification key(s) loaded from the key above; `None` when none is configured.
    #[serde(skip)]
    pub keys: Option<VerificationKeys>,
}

impl AuthConfig {
    /// Loads the key the fields above configure into `keys` (done by [`Config::load`]; a
    /// config built in code calls it after setting a key).
    pub fn load_keys(&mut self) -> Result<(), KeyError> {
        self.keys = keys::load(self)?;
        Ok(())
    }

    /// Makes `secret` the HS256 key (`--ephemeral-key`): the secret and its loaded key.
    pub fn use_hs256_secret(&mut self, secret: Secret) -> Result<(), KeyError> {
        self.keys = Some(keys::hs256(&secret)?);
        self.hs256_secret = secret;
        Ok(())
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            hs256_secret: Secret::new(""),
            public_key_file: String::new(),
            jwks_file: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway: Duration::from_secs(30),
            public_reads: false,
            ephemeral_key: false,
            keys: None,
        }
    }
}

/// Per-client request rate limiting (client = token subject, else IP address).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second per client.
    pub per_second: u32,
    /// Requests a client may send at once before the sustained rate applies.
    pub burst: u32,
    /// Peers (IP addresses or CIDRs) whose `X-Forwarded-For`/`Forwarded` headers name the
    /// client; from anyone else those headers are ignored.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Clients tracked at most; beyond this new clients share hashed buckets.
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 50,
            burst: 100,
            trusted_proxies: Vec::new(),
            max_clients: 100_000,
        }
    }
}

/// Browser-facing response policy: HSTS and CORS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Send `Strict-Transport-Security` (only behind TLS termination).
    pub hsts: bool,
    /// Origins allowed to call the API from a browser (e.g. `https://app.example.com`);
    /// empty = CORS off.
    pub cors_origins: Vec<Origin>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable, coloured when stdout is a terminal (local use).
    Pretty,
}

mod opt_addr {
    //! `""` means "off" for optional listener addresses, so env and TOML can switch them off.
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let raw = String::deserialize(d)?;
        if raw.trim().is_empty() {
            return Ok(None);
        }
        raw.parse()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("invalid socket address {raw:?}: {e}")))
    }
}

/// A configuration problem, rendered as one line naming the key and where its value came from.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// What the configuration is loaded for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Purpose {
    /// Serving requests: with auth on, a key (or `auth.ephemeral_key`) is required.
    #[default]
    Serve,
    /// A command that serves nothing (`config`, `migrate`, `token`): no key is needed.
    Offline,
}

/// Where configuration comes from; `Sources::from_env()` is what the binary uses.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// TOML file; `None` = no file.
    pub file: Option<PathBuf>,
    /// Whether the file must exist (true when named explicitly).
    pub file_required: bool,
    /// What the configuration is for.
    pub purpose: Purpose,
    /// `serve --ephemeral-key`: sets `auth.ephemeral_key = true` over every other source.
    pub ephemeral_key_flag: bool,
}

impl Sources {
    /// The real process environment and the file named by `SHIPSHAPE_CONFIG` or `./shipshape.toml`.
    pub fn from_env() -> Self {
        match std::env::var(CONFIG_ENV) {
            Ok(path) if !path.is_empty() => Self {
                file: Some(path.into()),
                file_required: true,
                ..Self::default()
            },
            _ => Self {
                file: Some(DEFAULT_CONFIG_FILE.into()),
                file_required: false,
                ..Self::default()
            },
        }
    }
}

impl Config {
    /// Loads and validates the configuration from `sources`.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = &sources.file {
            if file.exists() {
                figment = figment.merge(Toml::file_exact(file));
            } else if sources.file_required {
                return Err(ConfigError(format!(
                    "config file {} (from {CONFIG_ENV}) does not exist",
                    file.display()
                )));
            }
        }
        figment = figment.merge(env_provider());
        if sources.ephemeral_key_flag {
            figment = figment.merge(EphemeralKeyFlag);
        }
        let mut config: Config = figment.extract().map_err(|e| describe(&figment, e))?;
        config.validate(&figment, sources.purpose)?;
        Ok(config)
    }

    fn validate(&mut self, figment: &Figment, purpose: Purpose) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String| -> ConfigError {
            ConfigError(format!("key `{key}` {}: {why}", source_of(figment, key)))
        };
        let h = &self.http;
        for (key, d) in [
            ("http.request_timeout", h.request_timeout),
            ("http.header_read_timeout", h.header_read_timeout),
            ("http.idle_timeout", h.idle_timeout),
            ("http.shutdown_grace", h.shutdown_grace),
            ("database.acquire_timeout", self.database.acquire_timeout),
            (
                "database.statement_timeout",
                self.database.statement_timeout,
            ),
            ("database.ready_timeout", self.database.ready_timeout),
        ] {
            if d.is_zero() {
                return Err(bad(key, "must be greater than 0".into()));
            }
        }
        if !(1024..=64 * 1024 * 1024).contains(&h.body_limit) {
            return Err(bad(
                "http.body_limit",
                "must be between 1024 and 67108864 bytes".into(),
            ));
        }
        if h.max_concurrent_requests == 0 {
            return Err(bad(
                "http.max_concurrent_requests",
                "must be at least 1".into(),
            ));
        }
        let db = &self.database;
        if db.max_connections == 0 {
            return Err(bad("database.max_connections", "must be at least 1".into()));
        }
        if db.min_connections > db.max_connections {
            return Err(bad(
                "database.min_connections",
                "must not exceed database.max_connections".into(),
            ));
        }
        if !(1..=1024).contains(&db.commit_group_max) {
            return Err(bad(
                "database.commit_group_max",
                "must be between 1 and 1024".into(),
            ));
        }
        if db.commit_group_wait > Duration::from_millis(100) {
            return Err(bad(
                "database.commit_group_wait",
                "must be at most 100ms (it delays every write)".into(),
            ));
        }
        if h.max_connections == 0 {
            return Err(bad("http.max_connections", "must be at least 1".into()));
        }
        if let Some(r) = self.telemetry.sample_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(bad(
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0".into(),
            ));
        }
        self.validate_security(figment, purpose)
    }

    fn validate_security(
        &mut self,
        figment: &Figment,
        purpose: Purpose,
    ) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String| -> ConfigError {
            ConfigError(format!("key `{key}` {}: {why}", source_of(figment, key)))
        };
        let a = &self.auth;
        if a.leeway > Duration::from_secs(300) {
            return Err(bad("auth.leeway", "must be at most 5m".into()));
        }
        // First: a configured key next to the ephemeral one is the mistake to report.
        if a.ephemeral_key {
            self.validate_ephemeral_key(figment)?;
        }
        let key_error = |e: KeyError| -> ConfigError {
            let source = if e.key == "auth" {
                source_of(figment, "auth.enabled")
            } else {
                source_of(figment, e.key)
            };
            ConfigError(format!("key `{}` {source}: {e}", e.key))
        };
        let serving = purpose == Purpose::Serve;
        self.auth.load_keys().map_err(key_error)?;
        let a = &self.auth;
        if !a.ephemeral_key && a.enabled && a.keys.is_none() && serving {
            return Err(key_error(KeyError::missing()));
        }
        let r = &self.rate_limit;
        if r.per_second == 0 {
            return Err(bad("rate_limit.per_second", "must be at least 1".into()));
        }
        if r.burst == 0 {
            return Err(bad("rate_limit.burst", "must be at least 1".into()));
        }
        if r.max_clients < 16 {
            return Err(bad("rate_limit.max_clients", "must be at least 16".into()));
        }
        Ok(())
    }

    /// `auth.ephemeral_key` only where its safety is obvious: auth on, no configured key (two
    /// keys would be ambiguous), and SQLite (PostgreSQL means replicas, each with its own key:
    /// tokens would work on one pod and fail on the next).
    fn validate_ephemeral_key(&self, figment: &Figment) -> Result<(), ConfigError> {
        let a = &self.auth;
        let refuse = |why: String| -> ConfigError {
            ConfigError(format!(
                "key `auth.ephemeral_key` {}: {why}",
                source_of(figment, "auth.ephemeral_key")
            ))
        };
        if !a.enabled {
            return Err(refuse(format!(
                "needs auth.enabled = true, but auth.enabled is false {}",
                source_of(figment, "auth.enabled")
            )));
        }
        for (key, set) in [
            ("auth.hs256_secret", !a.hs256_secret.expose().is_empty()),
            ("auth.public_key_file", !a.public_key_file.is_empty()),
            ("auth.jwks_file", !a.jwks_file.is_empty()),
        ] {
            if set {
                return Err(refuse(format!(
                    "cannot be combined with a configured key: {key} is set {}; use one or \
                     the other",
                    source_of(figment, key)
                )));
            }
        }
        if self.database.url.backend() == Backend::Postgres {
            return Err(refuse(format!(
                "refused with a PostgreSQL database.url {}: a replicated deployment would have \
                 one key per replica; configure auth.hs256_secret, auth.public_key_file or \
                 auth.jwks_file instead",
                source_of(figment, "database.url")
            )));
        }
        Ok(())
    }

    /// Just `http.listen`, read leniently (for `shipshape healthcheck`, which must work even
    /// when other keys are invalid).
    pub fn listen_addr(sources: &Sources) -> Option<SocketAddr> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = sources.file.as_ref().filter(|f| f.exists()) {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(env_provider())
            .extract_inner("http.listen")
            .ok()
    }

    /// The effective configuration as TOML, with every secret redacted (`shipshape config`).
    pub fn redacted_toml(&self) -> String {
        let mut shown = match toml::Table::try_from(self) {
            Ok(table) => table,
            Err(e) => return format!("# cannot render config: {e}\n"),
        };
        let mut set = |section: &str, key: &str, value: String| {
            if let Some(toml::Value::Table(t)) = shown.get_mut(section) {
                t.insert(key.into(), toml::Value::String(value));
            }
        };
        set("database", "url", self.database.url.redacted());
        if !self.auth.hs256_secret.is_empty() {
            set("auth", "hs256_secret", "[redacted]".into());
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// [`Config::redacted_toml`] with the effective span export target and its source noted
    /// under `telemetry.otlp_endpoint`, for `shipshape config`. An endpoint taken from
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is shown as the value it acts as.
    pub fn describe_toml(&self) -> String {
        let t = &self.telemetry;
        let (shown, note) = match t.export_target() {
            None => (
                String::new(),
                "no span export (neither telemetry.otlp_endpoint nor OTEL_EXPORTER_OTLP_ENDPOINT \
                 is set)"
                    .to_owned(),
            ),
            Some((url, source)) => {
                let base = match source {
                    OtlpSource::Env(OTLP_ENDPOINT_ENV) => {
                        std::env::var(OTLP_ENDPOINT_ENV).unwrap_or_default()
                    }
                    _ => t.otlp_endpoint.clone(),
                };
                let from = match source {
                    OtlpSource::Config => "telemetry.otlp_endpoint".to_owned(),
                    OtlpSource::Env(name) => format!("env {name}"),
                };
                // A URL may carry credentials: shown redacted, as database.url is.
                let show = |u: &str| match url::Url::parse(u) {
                    Ok(parsed) if parsed.password().is_some() => redact_url(&parsed),
                    _ => u.to_owned(),
                };
                (
                    show(base.trim()),
                    format!("spans are exported to {} (from {from})", show(&url)),
                )
            }
        };
        let mut with_effective = self.clone();
        with_effective.telemetry.otlp_endpoint = shown;
        let text = with_effective.redacted_toml();
        let mut out = String::with_capacity(text.len() + 128);
        let mut in_telemetry = false;
        for line in text.lines() {
            out.push_str(line);
            out.push('\n');
            if line.starts_with('[') {
                in_telemetry = line == "[telemetry]";
            }
            if in_telemetry && line.starts_with("otlp_endpoint = ") {
                out.push_str(&format!("# effective: {note}\n"));
            }
        }
        out
    }
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT`: the standard base URL variable.
const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the standard complete traces URL variable.
const OTLP_TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

/// Where the span export endpoint comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpSource {
    /// `telemetry.otlp_endpoint`.
    Config,
    /// A standard OpenTelemetry environment variable.
    Env(&'static str),
}

/// `auth.ephemeral_key = true` from `serve --ephemeral-key`, above every other source.
struct EphemeralKeyFlag;

impl figment::Provider for EphemeralKeyFlag {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("command line --ephemeral-key")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        figment::Provider::data(&Serialized::default("auth.ephemeral_key", true))
    }
}

/// Names the source of `key`'s value: the TOML file, the env variable, or the defaults.
fn source_of(figment: &Figment, key: &str) -> String {
    describe_source(figment.find_metadata(key), key)
}

/// "(from env SHIPSHAPE_A__B)", "(from TOML file /path)" or "(default)".
fn describe_source(metadata: Option<&figment::Metadata>, key: &str) -> String {
    match metadata {
        Some(md) if md.name.contains("environment") => format!(
            "(from env {ENV_PREFIX}{})",
            key.replace('.', "__").to_ascii_uppercase()
        ),
        Some(md) if matches!(md.source, Some(figment::Source::Code(_))) => "(default)".into(),
        Some(md) => match &md.source {
            Some(src) => format!("(from {} {src})", md.name),
            None => format!("(from {})", md.name),
        },
        None => "(default)".into(),
    }
}

/// `SHIPSHAPE_*` variables with `__` for nesting.
///
/// A variable is read as configuration when it uses the nesting syntax (`SHIPSHAPE_X__Y`) or
/// starts with a section name (so the typo `SHIPSHAPE_DATABASE_URL` is an error, not ignored).
/// Other `SHIPSHAPE_*` variables are not ours to judge: `SHIPSHAPE_CONFIG` (the file), the test
/// suite's `SHIPSHAPE_TEST_*`, build inputs such as `SHIPSHAPE_GIT_REVISION`, and the
/// `SHIPSHAPE_SERVICE_HOST`/`SHIPSHAPE_PORT_*` variables Kubernetes injects for a Service named
/// `shipshape`.
fn env_provider() -> Env {
    let sections: Vec<String> = match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    Env::prefixed(ENV_PREFIX)
        .filter(move |key| {
            let key = key.as_str().to_ascii_lowercase();
            if key == "config" || key.starts_with("test_") {
                return false;
            }
            key.contains("__")
                || sections
                    .iter()
                    .any(|s| key.starts_with(&format!("{s}_")) || key == *s)
        })
        .split("__")
}

fn describe(figment: &Figment, err: figment::Error) -> ConfigError {
    // figment may report several errors; the first is enough to act on.
    let Some(first) = err.into_iter().next() else {
        return ConfigError("unknown error".into());
    };
    // For unknown fields figment's path already ends with the field's name.
    let path = first.path.join(".");
    let source = match &first.metadata {
        Some(md) => describe_source(Some(md), &path),
        None => source_of(figment, &path),
    };
    let what = match &first.kind {
        figment::error::Kind::UnknownField(field, _) => format!("unknown key `{field}`"),
        kind => kind.to_string(),
    };
    ConfigError(format!("key `{path}` {source}: {what}"))
}

#[cfg(test)]
// figment's `Jail` closures return `figment::Result`, whose error is large; it is the API.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// Loads with `./shipshape.toml` (if the jail has one) and the jail's environment.
    fn load(purpose: Purpose) -> Result<Config, String> {
        let sources = Sources {
            purpose,
            ..Sources::from_env()
        };
        Config::load(&sources).map_err(|e| e.to_string())
    }

    /// The error for a valid key plus `env`, in a jail of its own (which restores the env).
    fn error(env: (&str, &str)) -> String {
        let mut out = String::new();
        Jail::expect_with(|jail| {
            jail.set_env("SHIPSHAPE_AUTH__HS256_SECRET", SECRET);
            jail.set_env(env.0, env.1);
            out = load(Purpose::Serve).expect_err("config should be rejected");
            Ok(())
        });
        out
    }

    #[test]
    fn defaults_need_a_key_to_serve_but_not_offline() {
        Jail::expect_with(|_| {
            let e = load(Purpose::Serve).unwrap_err();
            assert!(
                e.contains("key `auth` (default): auth is enabled but no key"),
                "{e}"
            );
            let c = load(Purpose::Offline).unwrap();
            assert_eq!(c.http.listen, SocketAddr::from(([0, 0, 0, 0], 8080)));
            assert_eq!(c.database.url.backend(), Backend::Sqlite);
            assert!(c.auth.keys.is_none());
            Ok(())
        });
    }

    #[test]
    fn env_overrides_the_file_and_values_arrive_typed() {
        Jail::expect_with(|jail| {
            jail.create_file(
                DEFAULT_CONFIG_FILE,
                r#"
                [http]
                listen = "127.0.0.1:9000"
                request_timeout = "3s"
                [database]
                url = "postgres://app:pw@db:5432/app"
                [rate_limit]
                trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]
                [security]
                cors_origins = ["https://app.example.com"]
                "#,
            )?;
            jail.set_env("SHIPSHAPE_HTTP__LISTEN", "127.0.0.1:9001");
            jail.set_env("SHIPSHAPE_AUTH__HS256_SECRET", SECRET);
            let c = load(Purpose::Serve).map_err(figment::Error::from)?;
            assert_eq!(c.http.listen.port(), 9001);
            assert_eq!(c.http.request_timeout, Duration::from_secs(3));
            assert_eq!(c.database.url.backend(), Backend::Postgres);
            assert_eq!(c.rate_limit.trusted_proxies.len(), 2);
            assert!(c.rate_limit.trusted_proxies[0].contains(&"10.9.9.9".parse().unwrap()));
            assert_eq!(
                c.security.cors_origins[0].header_value(),
                "https://app.example.com"
            );
            assert!(matches!(c.auth.keys, Some(VerificationKeys::Single(_))));
            // Shown redacted, the secret and the password never.
            let shown = c.redacted_toml();
            assert!(
                !shown.contains(SECRET) && !shown.contains(":pw@"),
                "{shown}"
            );
            assert!(shown.contains("postgres://app:***@db:5432/app"), "{shown}");
            assert!(shown.contains("hs256_secret = \"[redacted]\""), "{shown}");
            Ok(())
        });
    }

    #[test]
    fn every_bad_value_names_its_key_and_source() {
        for (env, expected) in [
            (
                ("SHIPSHAPE_DATABASE__URL", "mysql://h/db"),
                "key `database.url` (from env SHIPSHAPE_DATABASE__URL): must start with sqlite:// or postgres://",
            ),
            (
                ("SHIPSHAPE_DATABASE_URL", "sqlite://x.db"),
                "unknown key `database_url`",
            ),
            (
                ("SHIPSHAPE_HTTP__LISTEN", "localhost"),
                "key `http.listen` (from env SHIPSHAPE_HTTP__LISTEN)",
            ),
            (
                ("SHIPSHAPE_HTTP__REQUEST_TIMEOUT", "0s"),
                "key `http.request_timeout` (from env SHIPSHAPE_HTTP__REQUEST_TIMEOUT): must be greater than 0",
            ),
            (
                ("SHIPSHAPE_HTTP__BODY_LIMIT", "10"),
                "key `http.body_limit` (from env SHIPSHAPE_HTTP__BODY_LIMIT): must be between 1024",
            ),
            (
                ("SHIPSHAPE_HTTP__MAX_CONCURRENT_REQUESTS", "0"),
                "key `http.max_concurrent_requests`",
            ),
            (
                ("SHIPSHAPE_HTTP__MAX_CONNECTIONS", "0"),
                "key `http.max_connections`",
            ),
            (
                ("SHIPSHAPE_DATABASE__MAX_CONNECTIONS", "0"),
                "key `database.max_connections`",
            ),
            (
                ("SHIPSHAPE_DATABASE__COMMIT_GROUP_MAX", "0"),
                "key `database.commit_group_max` (from env SHIPSHAPE_DATABASE__COMMIT_GROUP_MAX): must be between 1 and 1024",
            ),
            (
                ("SHIPSHAPE_DATABASE__COMMIT_GROUP_WAIT", "1s"),
                "key `database.commit_group_wait` (from env SHIPSHAPE_DATABASE__COMMIT_GROUP_WAIT): must be at most 100ms",
            ),
            (
                ("SHIPSHAPE_DATABASE__MIN_CONNECTIONS", "99"),
                "key `database.min_connections` (from env SHIPSHAPE_DATABASE__MIN_CONNECTIONS): must not exceed",
            ),
            (
                ("SHIPSHAPE_LOG__LEVEL", "info,[=bad"),
                "key `log.level` (from env SHIPSHAPE_LOG__LEVEL): not a valid filter",
            ),
            (
                ("SHIPSHAPE_TELEMETRY__SAMPLE_RATIO", "1.5"),
                "key `telemetry.sample_ratio` (from env SHIPSHAPE_TELEMETRY__SAMPLE_RATIO): must be between 0.0 and 1.0",
            ),
            (
                ("SHIPSHAPE_AUTH__LEEWAY", "10m"),
                "key `auth.leeway` (from env SHIPSHAPE_AUTH__LEEWAY): must be at most 5m",
            ),
            (
                ("SHIPSHAPE_AUTH__HS256_SECRET", "short"),
                "key `auth.hs256_secret` (from env SHIPSHAPE_AUTH__HS256_SECRET): must be at least 32 bytes",
            ),
            (
                ("SHIPSHAPE_RATE_LIMIT__PER_SECOND", "0"),
                "key `rate_limit.per_second`",
            ),
            (
                ("SHIPSHAPE_RATE_LIMIT__BURST", "0"),
                "key `rate_limit.burst`",
            ),
            (
                ("SHIPSHAPE_RATE_LIMIT__MAX_CLIENTS", "3"),
                "key `rate_limit.max_clients`",
            ),
            (
                ("SHIPSHAPE_RATE_LIMIT__TRUSTED_PROXIES", "[\"proxy.local\"]"),
                "key `rate_limit.trusted_proxies",
            ),
            (
                (
                    "SHIPSHAPE_SECURITY__CORS_ORIGINS",
                    "[\"https://*.example.com\"]",
                ),
                "key `security.cors_origins",
            ),
        ] {
            let e = error(env);
            assert!(e.contains(expected), "{env:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        Jail::expect_with(|jail| {
            jail.set_env("SHIPSHAPE_AUTH__HS256_SECRET", SECRET);
            jail.create_file(DEFAULT_CONFIG_FILE, "[http]\nlistenn = \"127.0.0.1:1\"\n")?;
            let e = load(Purpose::Serve).unwrap_err();
            assert!(
                e.contains("unknown key `listenn`") && e.contains("TOML file"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_ephemeral_key_is_refused_where_it_would_be_unsafe() {
        Jail::expect_with(|jail| {
            let sources = Sources {
                ephemeral_key_flag: true,
                ..Sources::from_env()
            };
            let c = Config::load(&sources).map_err(|e| e.to_string())?;
            assert!(c.auth.ephemeral_key && c.auth.keys.is_none());
            jail.set_env("SHIPSHAPE_AUTH__HS256_SECRET", SECRET);
            let e = Config::load(&sources).unwrap_err().to_string();
            assert!(e.contains("key `auth.ephemeral_key` (from command line --ephemeral-key): cannot be combined with a configured key: auth.hs256_secret is set (from env SHIPSHAPE_AUTH__HS256_SECRET)"), "{e}");
            jail.set_env("SHIPSHAPE_AUTH__HS256_SECRET", "");
            jail.set_env("SHIPSHAPE_DATABASE__URL", "postgres://db/app");
            let e = Config::load(&sources).unwrap_err().to_string();
            assert!(e.contains("refused with a PostgreSQL database.url"), "{e}");
            jail.set_env("SHIPSHAPE_DATABASE__URL", "sqlite://x.db");
            jail.set_env("SHIPSHAPE_AUTH__ENABLED", "false");
            let e = Config::load(&sources).unwrap_err().to_string();
            assert!(e.contains("needs auth.enabled = true, but auth.enabled is false (from env SHIPSHAPE_AUTH__ENABLED)"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn a_named_config_file_must_exist_and_the_listen_address_is_read_leniently() {
        Jail::expect_with(|jail| {
            let missing = Sources {
                file: Some("/nonexistent/shipshape.toml".into()),
                file_required: true,
                ..Sources::default()
            };
            let e = Config::load(&missing).unwrap_err().to_string();
            assert!(
                e.contains(
                    "config file /nonexistent/shipshape.toml (from SHIPSHAPE_CONFIG) does not exist"
                ),
                "{e}"
            );
            jail.create_file(
                DEFAULT_CONFIG_FILE,
                "[http]\nlisten = \"127.0.0.1:7777\"\nbody_limit = 1\n",
            )?;
            assert_eq!(
                Config::listen_addr(&Sources::from_env()).map(|a| a.port()),
                Some(7777)
            );
            Ok(())
        });
    }

    #[test]
    fn describe_notes_where_spans_go_without_showing_credentials() {
        Jail::expect_with(|jail| {
            let mut c = Config::default();
            assert!(c.describe_toml().contains("# effective: no span export"));
            jail.set_env(OTLP_ENDPOINT_ENV, "http://user:pw@collector:4318/");
            let shown = c.describe_toml();
            assert!(
                shown.contains("spans are exported to http://user:***@collector:4318/v1/traces (from env OTEL_EXPORTER_OTLP_ENDPOINT)"),
                "{shown}"
            );
            assert!(!shown.contains(":pw@"), "{shown}");
            jail.set_env(OTLP_TRACES_ENDPOINT_ENV, "http://traces:4318/custom");
            assert_eq!(
                c.telemetry.export_target(),
                Some((
                    "http://traces:4318/custom".into(),
                    OtlpSource::Env(OTLP_TRACES_ENDPOINT_ENV)
                ))
            );
            c.telemetry.otlp_endpoint = "http://otel:4318/v1/traces".into();
            assert_eq!(
                c.telemetry.traces_endpoint().as_deref(),
                Some("http://otel:4318/v1/traces")
            );
            assert!(c.describe_toml().contains("(from telemetry.otlp_endpoint)"));
            Ok(())
        });
    }
}
