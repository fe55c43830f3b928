//! The coordinator's processes: the server under test (`ringbearer serve` or the baseline)
//! and the worker processes (this binary re-executed as `ringbearer-perf worker`), each
//! started with `PR_SET_PDEATHSIG` so they die with the coordinator, and each stopped when
//! its handle drops — on success, on error and on panic.
//!
//! It does not decide what to run: `scenario.rs` does.

use crate::proto::{Cmd, Reply};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    Ringbearer,
    Baseline,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Ringbearer => "ringbearer",
            ServerKind::Baseline => "baseline",
        }
    }
}

/// What the server is started with.
pub struct ServerSpec<'a> {
    pub kind: ServerKind,
    pub bin: &'a Path,
    pub shards: usize,
    pub heartbeat_ms: u64,
    pub durability: Option<String>,
    /// Serve TLS only, with a self-signed certificate made for this run ([`self_signed`]).
    pub tls: bool,
    /// Where the server's stderr goes.
    pub log: PathBuf,
}

/// A self-signed ECDSA P-256 certificate for `localhost` and `127.0.0.1` (rcgen, as
/// `ringbearer dev-cert` makes them), written to `dir/cert.pem` and `dir/key.pem`;
/// returns the certificate's PEM, which the workers trust.
pub fn self_signed(dir: &Path) -> Result<String> {
    let ck = rcgen::generate_simple_self_signed(vec![
        crate::client::TLS_NAME.to_string(),
        "127.0.0.1".to_string(),
    ])
    .context("generating the run's TLS certificate")?;
    let cert = ck.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert)?;
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem())?;
    Ok(cert)
}

/// Makes a child die when the coordinator dies, however it dies.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

pub struct ServerProc {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    /// The HS256 secret tokens are minted with.
    pub secret: String,
    /// With TLS: the certificate (PEM) clients must trust.
    pub ca_pem: Option<String>,
    data: PathBuf,
}

/// Removes data directories left by runs whose coordinator was killed (`rb-perf-PID-*`
/// with PID no longer alive): a killed coordinator cannot clean up, and the server's log can
/// be large.
fn remove_stale_data_dirs() {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("rb-perf-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl ServerProc {
    pub fn start(spec: &ServerSpec) -> Result<ServerProc> {
        remove_stale_data_dirs();
        let data = std::env::temp_dir().join(format!(
            "rb-perf-{}-{}",
            std::process::id(),
            crate::procfs::mono_ns()
        ));
        std::fs::create_dir_all(&data)?;
        let log = std::fs::File::create(&spec.log)
            .with_context(|| format!("creating {}", spec.log.display()))?;
        let ca_pem = if spec.tls {
            Some(self_signed(&data)?)
        } else {
            None
        };
        let (cert, key) = (data.join("cert.pem"), data.join("key.pem"));
        let mut cmd = match spec.kind {
            ServerKind::Ringbearer => {
                let bin = spec.bin;
                if !bin.exists() {
                    bail!(
                        "server binary {} not found: build it with `cargo build --release -p ringbearer` or pass --server-bin",
                        bin.display()
                    );
                }
                let cfg = data.join("perf.toml");
                let tls = spec.tls.then_some((cert.as_path(), key.as_path()));
                std::fs::write(
                    &cfg,
                    server_config(spec.heartbeat_ms, spec.durability.as_deref(), tls),
                )?;
                let mut c = Command::new(bin);
                c.args(["serve", "--listen", "127.0.0.1:0", "--shards"])
                    .arg(spec.shards.to_string())
                    .arg("--data")
                    .arg(&data)
                    .arg("--config")
                    .arg(&cfg)
                    .env("RUST_LOG", "warn");
                c
            }
            ServerKind::Baseline => {
                let mut c = Command::new(std::env::current_exe()?);
                c.args(["baseline-server", "--listen", "127.0.0.1:0", "--threads"])
                    .arg(spec.shards.to_string());
                if spec.tls {
                    c.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
                }
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().context("starting the server")?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut proc = ServerProc {
            child,
            pid,
            addr: "127.0.0.1:0".parse().expect("literal"),
            secret: "baseline-ignores-tokens".into(),
            ca_pem,
            data,
        };
        let first = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
            anyhow!(
                "the server printed no first line within 30 s (see {})",
                spec.log.display()
            )
        })?;
        proc.addr = first
            .split("listening on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("unexpected first line from the server: {first}"))?;
        if spec.kind == ServerKind::Ringbearer {
            proc.secret = std::fs::read_to_string(proc.data.join("dev-secret"))
                .context("reading the server's dev-secret")?
                .trim()
                .to_owned();
        }
        Ok(proc)
    }

    /// SIGTERM, up to 3 s to exit, then SIGKILL.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The server config of every run: room for 19,900 connections and one channel with every
/// one of them subscribed (S2); heartbeats as asked; the per-channel publish rate and the
/// `enterprise` tier (the publishers' and channel creators' tier) lifted so the limits
/// measure nothing but the engine; everything else at its default.
///
/// IMPORTANT: `messages_per_min` stays at 10 M, not "unlimited": the server forgets a user
/// on its last close by probing its rate bucket `messages_per_min` times (O(rate) per
/// close, measured 100 % CPU on both shards for seconds at 1e9). Subscribers use the
/// `professional` tier (100 a minute) so their closes stay cheap.
///
/// `max_connections_per_ip` (default 1,000) is raised to 20,000: clients come from 4
/// loopback source addresses by default (~5,000 each at 19,900), and `--sources` may name
/// fewer.
///
/// `tls`: `(cert_file, key_file)` for the `[tls]` section (`--tls`; every connection on the
/// port is then TLS, see docs/operations.md "TLS").
pub fn server_config(
    heartbeat_ms: u64,
    durability: Option<&str>,
    tls: Option<(&Path, &Path)>,
) -> String {
    let mut storage = durability
        .map(|d| format!("\n[storage]\ndurability = \"{d}\"\n"))
        .unwrap_or_default();
    if let Some((cert, key)) = tls {
        storage.push_str(&format!(
            "\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ));
    }
    format!(
        "[io]
max_connections = 20000
max_connections_per_ip = 20000
heartbeat_interval_ms = {heartbeat_ms}

[limits]
max_subscribers = 20000
channel_messages_per_min = 1000000000

[limits.tiers.enterprise]
messages_per_min = 10000000
connections_per_user = 100
channels_per_org = 100000
subscriptions_per_user = 256
{storage}"
    )
}

pub struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
    pub pid: u32,
}

/// Every worker process of a run.
pub struct Workers {
    pub procs: Vec<WorkerProc>,
}

impl Workers {
    pub fn spawn(n: u32) -> Result<Workers> {
        let exe = std::env::current_exe().context("locating ringbearer-perf")?;
        let mut procs = Vec::new();
        for _ in 0..n {
            let mut cmd = Command::new(&exe);
            cmd.arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            die_with_parent(&mut cmd);
            let mut child = cmd.spawn().context("starting a worker")?;
            let stdout = child.stdout.take().expect("piped");
            let stdin = child.stdin.take();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(l) = line else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
            procs.push(WorkerProc {
                pid: child.id(),
                child,
                stdin,
                rx,
            });
        }
        Ok(Workers { procs })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|w| w.pid).collect()
    }

    /// Sends each worker its command (`cmd(worker index)`) and waits for every reply,
    /// `timeout` in all. A worker's `error` becomes an error here.
    pub fn call(&mut self, cmd: impl Fn(u32) -> Cmd, timeout: Duration) -> Result<Vec<Reply>> {
        for (i, w) in self.procs.iter_mut().enumerate() {
            let line = serde_json::to_string(&cmd(i as u32))?;
            let stdin = w.stdin.as_mut().context("worker stdin closed")?;
            writeln!(stdin, "{line}")
                .and_then(|_| stdin.flush())
                .with_context(|| format!("worker {i} is gone"))?;
        }
        let deadline = Instant::now() + timeout;
        let mut replies = Vec::new();
        for (i, w) in self.procs.iter_mut().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match w.rx.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("worker {i} did not answer within {timeout:?}")
                }
                Err(RecvTimeoutError::Disconnected) => bail!("worker {i} exited"),
            };
            let r: Reply = serde_json::from_str(&line)
                .with_context(|| format!("worker {i} answered: {line}"))?;
            if let Some(e) = &r.error {
                bail!("worker {i}: {e}");
            }
            replies.push(r);
        }
        Ok(replies)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.procs {
            if let Some(mut s) = w.stdin.take() {
                let _ = writeln!(s, "{{\"cmd\":\"exit\"}}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for w in &mut self.procs {
            loop {
                match w.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}
