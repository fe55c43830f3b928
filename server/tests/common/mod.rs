//! Test support: a real `ringbearer serve` process on 127.0.0.1:0 with its own temporary
//! data directory (killed and removed on drop), tokens minted with its development secret,
//! and a raw WebSocket client that sees every frame.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub data: PathBuf,
    child: Child,
    shards: usize,
}

impl TestServer {
    /// Starts a server with 2 shards and the given extra config (TOML).
    pub fn start(config: &str) -> TestServer {
        Self::start_with(2, config)
    }

    pub fn start_with(shards: usize, config: &str) -> TestServer {
        let data =
            std::env::temp_dir().join(format!("rb-test-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("test.toml"), config).unwrap();
        let (child, addr) = Self::spawn(&data, shards);
        TestServer {
            addr,
            data,
            child,
            shards,
        }
    }

    /// Starts a server (2 shards) whose data directory is `data` (created; removed on drop).
    pub fn start_in(data: &std::path::Path, config: &str) -> TestServer {
        std::fs::create_dir_all(data).unwrap();
        std::fs::write(data.join("test.toml"), config).unwrap();
        let (child, addr) = Self::spawn(data, 2);
        TestServer {
            addr,
            data: data.to_owned(),
            child,
            shards: 2,
        }
    }

    fn spawn(data: &std::path::Path, shards: usize) -> (Child, SocketAddr) {
        Self::spawn_at(data, shards, "127.0.0.1:0")
    }

    fn spawn_at(data: &std::path::Path, shards: usize, listen: &str) -> (Child, SocketAddr) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringbearer"))
            .args(["serve", "--listen", listen, "--shards", &shards.to_string()])
            .arg("--data")
            .arg(data)
            .arg("--config")
            .arg(data.join("test.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ringbearer");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("server printed nothing").unwrap();
        let addr = first
            .split("listening on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .parse()
            .unwrap();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        (child, addr)
    }

    /// Kills the server with SIGKILL (no chance to flush anything) and starts it again on
    /// the same data directory; the address changes.
    pub fn kill_and_restart(&mut self) {
        self.kill_and_restart_with(|| {});
    }

    /// Like `kill_and_restart`, running `between` after the kill and before the start.
    pub fn kill_and_restart_with(&mut self, between: impl FnOnce()) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        between();
        let (child, addr) = Self::spawn(&self.data, self.shards);
        self.child = child;
        self.addr = addr;
    }

    pub fn secret(&self) -> Vec<u8> {
        std::fs::read_to_string(self.data.join("dev-secret"))
            .unwrap()
            .trim()
            .as_bytes()
            .to_vec()
    }

    /// A token for `sub` in `org` with `role` and `weddings`, valid for an hour.
    pub fn token(&self, sub: &str, org: &str, role: &str, weddings: &[&str]) -> String {
        let now = now_s();
        self.token_claims(json!({
            "sub": sub, "org": org, "role": role, "tier": "professional",
            "weddings": weddings, "exp": now + 3600, "nbf": now - 1,
        }))
    }

    pub fn token_claims(&self, claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret()),
        )
        .unwrap()
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn connect(&self, token: &str) -> Raw {
        Raw::connect(&self.url(), token).await.expect("connect")
    }

    /// Sends SIGTERM and waits for the process (graceful stop).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Stops the server gracefully (SIGTERM: the registry is drained) and starts it again on
    /// the same data directory, after writing `config` as its config file when given; the
    /// address changes.
    pub fn restart(&mut self, config: Option<&str>) {
        let status = self.stop();
        assert!(status.success(), "graceful stop failed: {status:?}");
        if let Some(c) = config {
            std::fs::write(self.data.join("test.toml"), c).unwrap();
        }
        let (child, addr) = Self::spawn(&self.data, self.shards);
        self.child = child;
        self.addr = addr;
    }
}

impl TestServer {
    /// Stops the server gracefully and starts it again on the same data directory, listening
    /// on `listen` (e.g. a port reserved with [`free_port`]): a second server that has the
    /// first one's channel logs, at an address a client was given in advance.
    pub fn restart_at(&mut self, listen: SocketAddr) {
        let status = self.stop();
        assert!(status.success(), "graceful stop failed: {status:?}");
        let (child, addr) = Self::spawn_at(&self.data, self.shards, &listen.to_string());
        self.child = child;
        self.addr = addr;
    }
}

/// A loopback address nothing listens on right now (bound to port 0, then released).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) * 1_000_003
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A raw WebSocket client: every frame is visible. `S` is the byte stream under it (TLS in
/// `tls.rs`).
pub struct Raw<S = MaybeTlsStream<TcpStream>> {
    pub ws: WebSocketStream<S>,
    next_ref: u64,
    /// Frames read while waiting for something else, in arrival order.
    pub backlog: std::collections::VecDeque<Value>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Close(Option<u16>),
    Eof,
}

impl Raw {
    pub async fn connect(
        url: &str,
        token: &str,
    ) -> Result<Raw, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Raw::from_ws(ws))
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Raw<S> {
    pub fn from_ws(ws: WebSocketStream<S>) -> Self {
        Raw {
            ws,
            next_ref: 0,
            backlog: Default::default(),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .send(Message::Text(s.to_owned().into()))
            .await
            .unwrap();
    }

    /// The next JSON frame (from the backlog first), within `WAIT`.
    pub async fn next(&mut self) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        self.next_fresh().await
    }

    async fn next_fresh(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("read error");
            match m {
                Message::Text(t) => return serde_json::from_str(&t).expect("server sent JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Sends `req` with a fresh `ref` and returns the reply with that `ref`; other frames
    /// received meanwhile stay in the backlog.
    pub async fn request(&mut self, mut req: Value) -> Value {
        self.next_ref += 1;
        let r = format!("r{}", self.next_ref);
        req["ref"] = json!(r);
        self.send(req).await;
        self.wait_for(|v| v["ref"] == json!(r)).await
    }

    /// Waits for the first frame matching `pred` (backlog first); others stay queued.
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i).unwrap();
        }
        loop {
            let v = self.next_fresh().await;
            if pred(&v) {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    /// Waits for `n` `message` frames on `channel`, in arrival order.
    pub async fn messages(&mut self, channel: &str, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            out.push(
                self.wait_for(|v| v["op"] == "message" && v["channel"] == channel)
                    .await,
            );
        }
        out
    }

    pub async fn create(&mut self, name: &str, wedding: Option<&str>) -> Value {
        let mut req = json!({"op": "create", "name": name});
        if let Some(w) = wedding {
            req["wedding_id"] = json!(w);
        }
        self.request(req).await
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.request(json!({"op": "subscribe", "channel": channel}))
            .await
    }

    pub async fn publish(&mut self, channel: &str, payload: Value) -> Value {
        self.request(
            json!({"op": "publish", "channel": channel, "type": "general", "payload": payload}),
        )
        .await
    }

    /// Reads until the connection ends; returns how (close code or EOF), within `WAIT`.
    pub async fn ended(&mut self) -> Ended {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("connection did not end")
            {
                None | Some(Err(_)) => return Ended::Eof,
                Some(Ok(Message::Close(f))) => {
                    return Ended::Close(f.map(|f: CloseFrame| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
            }
        }
    }
}

impl Raw {
    /// This connection's shard, from its own presence entry on a subscribed channel.
    pub fn shard_of(subscribed: &Value, user: &str) -> u32 {
        let id = subscribed["presence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["user_id"] == user)
            .expect("own presence entry")["connection_id"]
            .as_str()
            .unwrap()
            .to_owned();
        id.split('-').nth(1).unwrap().parse().unwrap()
    }
}

/// The ids of the `messages` of a `subscribed` reply.
pub fn message_ids(subscribed: &Value) -> Vec<u64> {
    subscribed["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {subscribed}"))
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

/// Asserts an error reply with `code`.
pub fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["op"], "error", "expected {code}, got {v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["retryable"].is_boolean(), "{v}");
}

/// Which shard owns `name` with `shards` shards.
pub fn owner(name: &str, shards: usize) -> usize {
    ringbearer_core::shard_for(name, shards)
}

/// A minimal blocking WebSocket client over a std socket, for what a well-behaved client
/// library will not do: stop reading, never answer pings, send invalid UTF-8.
pub struct RawTcp {
    pub s: std::net::TcpStream,
    buf: Vec<u8>,
}

impl RawTcp {
    /// Connects (with `rcvbuf` bytes of receive buffer if given) and upgrades.
    pub fn upgrade(addr: SocketAddr, path: &str, token: &str, rcvbuf: Option<usize>) -> RawTcp {
        use std::io::{Read, Write};
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if let Some(n) = rcvbuf {
            sock.set_recv_buffer_size(n).unwrap();
        }
        sock.connect(&addr.into()).unwrap();
        let mut s: std::net::TcpStream = sock.into();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            buf.push(b[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawTcp { s, buf: Vec::new() }
    }

    /// Sends one masked frame (RFC 6455 §5.3).
    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        use std::io::Write;
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut f = vec![0x80 | opcode];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n <= 65535 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).unwrap();
    }

    pub fn send_json(&mut self, v: &Value) {
        self.send_frame(0x1, v.to_string().as_bytes());
    }

    /// The next whole frame `(opcode, payload)`; `None` at EOF, reset or a truncated frame.
    pub fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        loop {
            if self.buf.len() >= 2 {
                let op = self.buf[0] & 0x0f;
                let (len, hdr) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= hdr + len {
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    self.buf.drain(..hdr + len);
                    return Some((op, payload));
                }
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next text frame as JSON, skipping pings; `None` when the connection ends.
    pub fn read_json(&mut self) -> Option<Value> {
        loop {
            match self.read_frame()? {
                (0x1, p) => return Some(serde_json::from_slice(&p).unwrap()),
                (0x8, _) => return None,
                _ => continue,
            }
        }
    }
}

impl TestServer {
    /// A token like [`TestServer::token`] with a chosen tier.
    pub fn token_tier(
        &self,
        sub: &str,
        org: &str,
        role: &str,
        tier: &str,
        weddings: &[&str],
    ) -> String {
        let now = now_s();
        self.token_claims(json!({
            "sub": sub, "org": org, "role": role, "tier": tier,
            "weddings": weddings, "exp": now + 3600, "nbf": now - 1,
        }))
    }
}

/// Runs the real binary with `args` (a subcommand other than `serve`) and returns what it
/// printed; panics if it fails.
pub fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ringbearer"))
        .args(args)
        .output()
        .expect("run ringbearer");
    assert!(
        out.status.success(),
        "ringbearer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

impl TestServer {
    /// Like [`TestServer::start`] (2 shards, `config`), with `customize` applied to the
    /// `serve` command before it runs (extra flags, environment such as `RUST_LOG`, a
    /// `pre_exec`); stderr goes to `DATA/stderr.log` (read it with [`TestServer::log`]).
    pub fn start_custom(config: &str, customize: impl FnOnce(&mut Command)) -> TestServer {
        let data =
            std::env::temp_dir().join(format!("rb-test-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("test.toml"), config).unwrap();
        let mut cmd = serve_command(&data, "127.0.0.1:0");
        cmd.env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(data.join("stderr.log")).unwrap());
        customize(&mut cmd);
        let mut child = cmd.spawn().expect("spawn ringbearer");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = match lines.next() {
            Some(Ok(l)) => l,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(data.join("stderr.log")).unwrap_or_default();
                panic!("server printed nothing; stderr:\n{log}");
            }
        };
        let addr = first
            .split("listening on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .parse()
            .unwrap();
        std::thread::spawn(move || for _ in lines {});
        TestServer {
            addr,
            data,
            child,
            shards: 2,
        }
    }

    /// What the server wrote to stderr so far (servers from [`TestServer::start_custom`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("stderr.log")).unwrap_or_default()
    }

    /// Waits (within `WAIT`) until the server's stderr has a line for which `pred` holds,
    /// and returns it.
    pub fn wait_log_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(l) = self.log().lines().find(|l| pred(l)) {
                return l.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line {what} within {WAIT:?}; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `ringbearer serve --listen LISTEN --shards 2 --data DATA --config DATA/test.toml`, not
/// yet started.
pub fn serve_command(data: &std::path::Path, listen: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringbearer"));
    cmd.args(["serve", "--listen", listen, "--shards", "2"])
        .arg("--data")
        .arg(data)
        .arg("--config")
        .arg(data.join("test.toml"));
    cmd
}

impl RawTcp {
    /// Wraps a socket whose upgrade already succeeded.
    pub fn from_stream(s: std::net::TcpStream) -> RawTcp {
        RawTcp { s, buf: Vec::new() }
    }
}

/// One REST call to `server` over a fresh connection with a bearer credential (a JWT or an
/// API key): (status, JSON body).
pub async fn rest_call(
    server: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n"
    );
    if let Some(b) = &body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(&b);
    }
    s.write_all(&bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("REST answer in time")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).expect("JSON body"))
}

/// A counter or gauge from `GET /api/websocket/metrics` (Prometheus text), within `WAIT`.
pub async fn metric(server: &TestServer, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /api/websocket/metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut body))
        .await
        .expect("metrics in time")
        .unwrap();
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the metrics: {text}"))
}
