//! Connection-level defences over raw TCP: idle, silent and slowloris clients are closed, and
//! connections beyond `http.max_connections` wait for a slot.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, TestApp, raw_exchange};

#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.http.idle_timeout = Duration::from_secs(1);
        c.http.header_read_timeout = Duration::from_secs(3);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // A keep-alive connection that goes quiet after one request: closed by idle_timeout
    // (before hyper's header_read_timeout would).
    let start = std::time::Instant::now();
    let (answer, closed) = raw_exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
        Duration::from_secs(6),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "idle keep-alive connection closed");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    // A client that connects and sends nothing.
    let (_, closed) = raw_exchange(&addr, b"", Duration::from_secs(6)).await;
    assert!(closed, "silent client disconnected");
    // A client that drips its request head (never idle, never done): header_read_timeout.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let start = std::time::Instant::now();
    let mut closed_after = None;
    for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: "
        .iter()
        .chain(std::iter::repeat(&b'a'))
        .take(100)
    {
        if s.write_all(&[*byte]).await.is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(start.elapsed());
                break;
            }
            _ => {}
        }
    }
    let t = closed_after.expect("slowloris client was disconnected");
    assert!(
        t >= Duration::from_millis(2500) && t < Duration::from_secs(6),
        "{t:?}"
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_wait() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.http.max_connections = 2;
        c.http.header_read_timeout = Duration::from_secs(2);
        // Long: only the early close of idle connections under pressure can free a slot here.
        c.http.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Two silent connections hold both slots ...
    let _a = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... so a third is not served until one of them is closed to make room: every slot is
    // taken, so connections idle for a second are closed (not after the 30 s idle timeout).
    let start = std::time::Instant::now();
    let (answer, _) = raw_exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "waited for a slot: {:?}",
        start.elapsed()
    );
}
