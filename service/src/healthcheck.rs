//! `shipshape healthcheck`: a tiny HTTP client for exec probes and Docker `HEALTHCHECK`.

use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::Empty;
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;

/// GETs `url` (plain `http://` only) and succeeds only on a 200 within `timeout`.
pub async fn check(url: &str, timeout: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, get(url))
        .await
        .with_context(|| format!("no answer from {url} within {}ms", timeout.as_millis()))?
}

async fn get(url: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url).with_context(|| format!("invalid URL {url}"))?;
    if parsed.scheme() != "http" {
        bail!("only http:// URLs are supported, got {url}");
    }
    let host = parsed.host_str().context("URL has no host")?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let req = Request::get(path)
        .header("host", format!("{host}:{port}"))
        .header(
            "user-agent",
            concat!("shipshape-healthcheck/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())?;
    let res = sender.send_request(req).await?;
    if res.status() != hyper::StatusCode::OK {
        bail!("{url} answered {}", res.status());
    }
    Ok(())
}
