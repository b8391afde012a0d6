//! The request guard: authenticates `/v1` requests, rate-limits per client, enforces scopes.
//!
//! Order matters: the token is verified first (so a valid subject gets its own bucket, and
//! an invalid token cannot claim someone else's), then the rate limit applies to everyone,
//! failed authentications included, and only then is a 401/403 returned.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    AppState,
    client_ip::client_ip,
    error::ApiError,
    ratelimit::{ClientKey, Decision, Limiter, retry_after_secs},
};
use crate::{
    auth::{AuthError, Principal, SCOPE_READ, Verifier, required_scope},
    config::{AuthConfig, RateLimitConfig, TrustedProxy},
};

/// Authentication and rate-limiting policy, built once from the config.
pub struct Guard {
    /// `Off` when auth is disabled.
    auth: Auth,
    public_reads: bool,
    /// `None` when rate limiting is disabled.
    limiter: Option<Limiter>,
    trusted_proxies: Vec<TrustedProxy>,
}

enum Auth {
    Off,
    Tokens(Verifier),
    /// Auth is on but no key was loaded (a config built without `AuthConfig::load_keys`):
    /// fail closed, every API request is 401.
    NoKey,
}

impl Guard {
    pub fn new(auth: &AuthConfig, rate_limit: &RateLimitConfig) -> Guard {
        let mode = if !auth.enabled {
            tracing::warn!(
                "authentication is DISABLED (auth.enabled = false): anyone who can reach the \
                 service can read and change items; never run it like this outside local use"
            );
            Auth::Off
        } else {
            match Verifier::new(auth) {
                Some(v) => Auth::Tokens(v),
                None => {
                    tracing::error!(
                        "auth is enabled but no key is loaded; rejecting all API requests"
                    );
                    Auth::NoKey
                }
            }
        };
        Guard {
            auth: mode,
            public_reads: auth.public_reads,
            limiter: rate_limit.enabled.then(|| Limiter::new(rate_limit)),
            trusted_proxies: rate_limit.trusted_proxies.clone(),
        }
    }

    fn authenticate(&self, header: Option<&HeaderValue>) -> Option<Result<Principal, AuthError>> {
        let header = header.map(HeaderValue::as_bytes);
        match &self.auth {
            Auth::Off => None,
            Auth::Tokens(v) => Some(v.authenticate(header)),
            Auth::NoKey => Some(Err(AuthError::Invalid("no verification key is configured"))),
        }
    }
}

/// Paths never authenticated nor rate-limited: orchestrator probes and the metrics scrape.
fn is_exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

fn is_api(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_exempt(path) {
        return next.run(req).await;
    }
    let guard = &state.guard;
    let api = is_api(path);
    let auth = if api {
        guard.authenticate(req.headers().get(header::AUTHORIZATION))
    } else {
        None
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
        let scope = required_scope(req.method().as_str());
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
