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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A one-shot HTTP server that answers `status_line` and returns its URL.
    async fn answer(status_line: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let reply = format!("{status_line}\r\ncontent-length: 0\r\n\r\n");
            let _ = s.write_all(reply.as_bytes()).await;
        });
        format!("http://{addr}/readyz?full=1")
    }

    #[tokio::test]
    async fn succeeds_only_on_200() {
        let ok = answer("HTTP/1.1 200 OK").await;
        check(&ok, Duration::from_secs(5)).await.unwrap();
        let down = answer("HTTP/1.1 503 Service Unavailable").await;
        let e = check(&down, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            e.to_string().ends_with("answered 503 Service Unavailable"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn says_why_it_failed() {
        let e = check("https://127.0.0.1:1/readyz", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("only http:// URLs"), "{e}");
        let e = check("not a url", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("invalid URL"), "{e}");
        // Nothing listens on port 1.
        let e = check("http://127.0.0.1:1/readyz", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("connecting to 127.0.0.1:1"),
            "{e:#}"
        );
        // A server that never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/readyz", silent.local_addr().unwrap());
        let e = check(&url, Duration::from_millis(200)).await.unwrap_err();
        assert!(e.to_string().contains("no answer from"), "{e}");
    }
}
