//! A dev chain for tests and local runs: anvil (foundry) from the npm package that
//! `scripts/infra install` puts in the cache, on a loopback port of the caller's choosing.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// anvil's first dev account (from its default mnemonic), printed by anvil at start.
pub const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// The anvil binary: `$PAVILION_ANVIL_BIN`, else where `scripts/infra install` puts it.
pub fn anvil_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PAVILION_ANVIL_BIN") {
        return bin.into();
    }
    let cache = std::env::var_os("PAVILION_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
                .join(".cache/pavilion")
        });
    cache.join("anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

/// A running anvil; killed when dropped, so a failing test leaves none behind.
pub struct Anvil {
    child: Option<Child>,
    port: u16,
}

impl Anvil {
    /// Starts anvil on `port` (keeping its chain in `state` across restarts, when given),
    /// logging to `log`, and waits until it listens.
    pub fn start(port: u16, state: Option<&Path>, log: &Path) -> Anvil {
        let bin = anvil_bin();
        assert!(
            bin.is_file(),
            "anvil not found at {}: run `scripts/infra install` (or set PAVILION_ANVIL_BIN)",
            bin.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut command = Command::new(&bin);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(state) = state {
            command.arg("--state").arg(state);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut anvil = Anvil {
            child: Some(child),
            port,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = anvil.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("anvil exited at start with {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "anvil did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        anvil
    }

    /// Its JSON-RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, the way an operator stops a node: anvil writes its `--state` file on the way
    /// out.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "anvil ignored SIGTERM for 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
