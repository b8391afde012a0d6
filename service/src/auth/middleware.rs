//! The request guard: authenticates `/v1` requests, rate-limits per client, enforces scopes.
//!
//! Order matters: the token is verified first (so a valid subject gets its own bucket, and
//! an invalid token cannot claim someone else's), then the rate limit applies to everyone,
//! failed authentications included, and only then is a 401/403 returned.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ipnet::IpNet;

use super::keys::{AuthError, Principal, Verifier};
use crate::{
    config::Config,
    error::ApiError,
    http::{
        AppState,
        client_ip::{client_ip, parse_proxies},
        ratelimit::{ClientKey, Decision, Limiter, retry_after_secs},
    },
};

/// Scope needed for reads (`GET`/`HEAD` on `/v1/items*`).
pub const SCOPE_READ: &str = "items:read";
/// Scope needed for every other method on `/v1`.
pub const SCOPE_WRITE: &str = "items:write";

/// Authentication and rate-limiting policy, built once from the config.
pub struct Guard {
    /// `None` when auth is disabled.
    pub verifier: Option<Verifier>,
    pub public_reads: bool,
    /// `None` when rate limiting is disabled.
    pub limiter: Option<Limiter>,
    pub trusted_proxies: Vec<IpNet>,
}

impl Guard {
    /// The guard for `config`, failing closed: if the keys cannot be loaded (config not
    /// validated through `Config::load`), every API request is rejected with 401.
    pub fn new(config: &Config) -> Guard {
        if !config.auth.enabled {
            tracing::warn!(
                "authentication is DISABLED (auth.enabled = false): anyone who can reach the \
                 service can read and change items; never run it like this outside local use"
            );
        }
        match Guard::from_config(config) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up authentication; rejecting all API requests");
                Guard {
                    verifier: Some(Verifier::reject_all()),
                    public_reads: false,
                    limiter: config
                        .rate_limit
                        .enabled
                        .then(|| Limiter::new(&config.rate_limit)),
                    trusted_proxies: Vec::new(),
                }
            }
        }
    }

    pub fn from_config(config: &Config) -> anyhow::Result<Guard> {
        let verifier = if config.auth.enabled {
            Verifier::from_config(&config.auth)
                .map_err(|e| anyhow::anyhow!("invalid configuration: key `{}`: {e}", e.key()))?
        } else {
            None
        };
        let rl = &config.rate_limit;
        Ok(Guard {
            verifier,
            public_reads: config.auth.public_reads,
            limiter: rl.enabled.then(|| Limiter::new(rl)),
            trusted_proxies: parse_proxies(&rl.trusted_proxies)
                .map_err(|e| anyhow::anyhow!("invalid rate_limit.trusted_proxies: {e}"))?,
        })
    }
}

/// Paths never authenticated nor rate-limited: orchestrator probes and the metrics scrape.
fn is_exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

fn is_api(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// The scope `method` needs on the API.
pub fn required_scope(method: &Method) -> &'static str {
    if *method == Method::GET || *method == Method::HEAD {
        SCOPE_READ
    } else {
        SCOPE_WRITE
    }
}

pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_exempt(path) {
        return next.run(req).await;
    }
    let guard = &state.guard;
    let api = is_api(path);
    let auth: Option<Result<Principal, AuthError>> = match (&guard.verifier, api) {
        (Some(v), true) => Some(
            v.authenticate(
                req.headers()
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
            ),
        ),
        _ => None,
    };

    let mut rate_headers = None;
    if let Some(limiter) = &guard.limiter {
        let key = match &auth {
            Some(Ok(p)) => ClientKey::Subject(p.subject.clone()),
            _ => {
                let peer = req
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
                ClientKey::ip(client_ip(peer, req.headers(), &guard.trusted_proxies))
            }
        };
        match limiter.check(key) {
            Decision::Allowed { remaining } => {
                rate_headers = Some((limiter.policy_header(), limiter.status_header(remaining)));
            }
            Decision::Limited { retry_after } => {
                state.metrics.reject("rate_limited");
                let secs = retry_after_secs(retry_after);
                return ApiError::RateLimited {
                    retry_after: secs,
                    policy: limiter.policy_header(),
                    status: format!("\"default\";r=0;t={secs}"),
                }
                .into_response();
            }
        }
    }

    if let Some(auth) = auth {
        let scope = required_scope(req.method());
        match auth {
            Ok(principal) if principal.has_scope(scope) => {
                req.extensions_mut().insert(principal);
            }
            Ok(_) => {
                state.metrics.reject("auth");
                return with_rate_headers(ApiError::InsufficientScope(scope), rate_headers);
            }
            Err(AuthError::Missing) if guard.public_reads && scope == SCOPE_READ => {}
            Err(e) => {
                state.metrics.reject("auth");
                return with_rate_headers(ApiError::Unauthorized(e), rate_headers);
            }
        }
    }

    let mut response = next.run(req).await;
    if let Some((policy, status)) = rate_headers {
        set_rate_headers(&mut response, policy, status);
    }
    response
}

fn with_rate_headers(err: ApiError, rate: Option<(String, String)>) -> Response {
    let mut response = err.into_response();
    if let Some((policy, status)) = rate {
        set_rate_headers(&mut response, policy, status);
    }
    response
}

fn set_rate_headers(response: &mut Response, policy: String, status: String) {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::try_from(policy) {
        h.insert("ratelimit-policy", v);
    }
    if let Ok(v) = HeaderValue::try_from(status) {
        h.insert("ratelimit", v);
    }
}
