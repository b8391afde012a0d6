// Rule test for rust-log-secrets (semgrep --test).
use tracing::{debug, error, info, info_span, warn};

fn bad(cfg: &Config, req: &Request<Body>, parts: &Parts, token: &str, headers: &HeaderMap) {
    // ruleid: rust-log-secrets
    info!(password = %cfg.database.password, "connecting");
    // ruleid: rust-log-secrets
    tracing::debug!(token = ?token, "validating");
    // ruleid: rust-log-secrets
    debug!(auth = ?req.headers().get(AUTHORIZATION), "request");
    // ruleid: rust-log-secrets
    warn!(header = ?req.headers().get("authorization"), "rejected");
    // ruleid: rust-log-secrets
    error!(?headers, "bad request");
    // ruleid: rust-log-secrets
    info!("using secret {}", cfg.auth.hs256_secret);
    // ruleid: rust-log-secrets
    info!("got bearer {token}");
    // ruleid: rust-log-secrets
    debug!("jwt: {access_token:?}");
    // ruleid: rust-log-secrets
    debug!(?req, "incoming");
    // ruleid: rust-log-secrets
    debug!(request = ?parts, "incoming");
    // ruleid: rust-log-secrets
    let span = info_span!("auth", api_key = %key);
    // ruleid: rust-log-secrets
    tracing::event!(Level::WARN, cookie = ?jar, "session");
    // ruleid: rust-log-secrets
    log::warn!("db url {}", cfg.database.url_with_password);
    // ruleid: rust-log-secrets
    info!(
        sub = %claims.sub,
        bearer = %raw,
        "multi-line"
    );
}

fn fine(claims: &Claims, err: &AuthError, req: &Request<Body>) {
    // ok: rust-log-secrets
    warn!("invalid token presented");
    // ok: rust-log-secrets
    warn!(reason = "expired_token", sub = %claims.sub, "authentication failed");
    // ok: rust-log-secrets
    info!(kid = ?claims.kid, scope = %claims.scope, "authenticated");
    // ok: rust-log-secrets
    warn!(error = %err, "rejected request with an invalid password-less bearer scheme \"x\"");
    // ok: rust-log-secrets
    info!(method = %req.method(), uri = %req.uri(), "request");
    // ok: rust-log-secrets
    info!("no Authorization header; auth is disabled by config");
    // ok: rust-log-secrets
    debug!(has_credentials = present, "auth state"); // nosemgrep: rust-log-secrets -- a bool, not the credential
    // println! is not a log macro (CLI output such as `shipshape token` is intended).
    // ok: rust-log-secrets
    println!("{token}");
}

// ruleid: rust-instrument-secrets
#[instrument]
async fn login(user: &str, password: String) {}

// ruleid: rust-instrument-secrets
#[tracing::instrument(level = "debug", err)]
pub async fn create_item(State(app): State<App>, headers: HeaderMap, Json(body): Json<NewItem>) {}

// ruleid: rust-instrument-secrets
#[instrument(skip(self))]
async fn authenticate(&self, req: &Request<Body>) -> Result<Claims, AuthError> {}

// ruleid: rust-instrument-secrets
#[instrument(fields(sub))]
pub(crate) fn load(cfg: &Config) -> Result<Keys> {}

// ok: rust-instrument-secrets
#[instrument(skip_all, fields(sub = %claims.sub))]
async fn update(headers: HeaderMap, claims: Claims) {}

// ok: rust-instrument-secrets
#[instrument(level = "debug")]
fn parse_cursor(raw: &str) -> Result<Cursor, CursorError> {}

// ok: rust-instrument-secrets
#[instrument(err)]
async fn get(id: Uuid, request_id: RequestId) -> Result<Item, ApiError> {}

fn trace_layer() {
    // ruleid: rust-log-all-headers
    let layer = TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().include_headers(true));
    // ok: rust-log-all-headers
    let layer = TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().include_headers(false));
}
