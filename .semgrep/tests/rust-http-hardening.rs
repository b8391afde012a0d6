// Rule test for rust-body-limit-disabled, rust-cors-permissive, rust-tls-verification-disabled
// and rust-dbg-macro (semgrep --test).
use axum::extract::DefaultBodyLimit;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

fn router(cfg: &HttpConfig) -> Router {
    Router::new()
        // ruleid: rust-body-limit-disabled
        .layer(DefaultBodyLimit::disable())
        // ok: rust-body-limit-disabled
        .layer(DefaultBodyLimit::max(cfg.body_limit))
        // ruleid: rust-cors-permissive
        .layer(CorsLayer::permissive())
        // ruleid: rust-cors-permissive
        .layer(CorsLayer::new().allow_origin(Any).allow_methods([Method::GET]))
        // ruleid: rust-cors-permissive
        .layer(CorsLayer::new().allow_origin(AllowOrigin::mirror_request()).allow_credentials(true))
        // ok: rust-cors-permissive
        .layer(CorsLayer::new().allow_origin(AllowOrigin::list(cfg.cors_origins.clone())))
}

async fn read(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    // ruleid: rust-body-limit-disabled
    let all = axum::body::to_bytes(body, usize::MAX).await?;
    // ok: rust-body-limit-disabled
    let bounded = axum::body::to_bytes(body, limit).await?;
    Ok(bounded)
}

fn clients(opts: PgConnectOptions) {
    // ruleid: rust-tls-verification-disabled
    let c = reqwest::Client::builder().danger_accept_invalid_certs(true).build();
    // ok: rust-tls-verification-disabled
    let c = reqwest::Client::builder().https_only(true).build();
    // ruleid: rust-tls-verification-disabled
    let o = opts.ssl_mode(PgSslMode::Disable);
    // ok: rust-tls-verification-disabled
    let o = opts.ssl_mode(PgSslMode::VerifyFull);
}

fn debug(item: &Item) {
    // ruleid: rust-dbg-macro
    dbg!(item);
    // ok: rust-dbg-macro
    tracing::debug!(id = %item.id, "item");
}
