//! The real `shipshape` binary as a child process: one-shot runs and `serve` on a free port,
//! with a clean environment, stdout captured to a log file and coverage profiles kept.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_shipshape");

/// The binary in `dir` with an empty environment except PATH (and LLVM_PROFILE_FILE, so that
/// coverage runs count the child too).
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(std::env::var("LLVM_PROFILE_FILE").map(|v| ("LLVM_PROFILE_FILE", v)));
    cmd
}

/// Runs the binary with `args` and only `env` set, in `dir`.
pub fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run shipshape")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `shipshape serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    /// `serve` on 127.0.0.1:`port` against `db_url`, auth off, plus `extra` environment; stdout
    /// (the JSON log) goes to a file in `dir`. Does not wait: see [`Server::wait_ready`].
    pub fn spawn(dir: &Path, db_url: &str, port: u16, extra: &[(&str, &str)]) -> Server {
        let log = dir.join(format!("server-{port}-{}.log", std::process::id()));
        let child = command(dir)
            .arg("serve")
            .env("SHIPSHAPE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("SHIPSHAPE_DATABASE__URL", db_url)
            .env("SHIPSHAPE_AUTH__ENABLED", "false")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shipshape");
        Server { child, port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits up to 30 s for `/readyz` 200; panics with the log if the server exits first.
    pub async fn wait_ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited early: {status}\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server not ready in time");
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// The exit code, waiting up to `limit`; panics (after killing it) if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("server did not exit within {limit:?}");
    }

    /// SIGTERM, expect exit 0 within 20 s, and return the log lines.
    pub fn stop(mut self) -> Vec<String> {
        self.signal("TERM");
        assert_eq!(
            self.wait_exit(Duration::from_secs(20)),
            Some(0),
            "exit status"
        );
        self.log_text().lines().map(str::to_owned).collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
