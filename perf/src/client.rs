//! The lean client connection: a tokio TCP socket bound to one of several loopback source
//! addresses, upgraded with tokio-tungstenite, with small buffers. Per-connection state is
//! the `WebSocketStream` and what the worker keeps in its slot (channel, last id), nothing
//! else — no request table, no reconnect machinery.
//!
//! With `--tls` every connection speaks TLS first (tokio-rustls, the ring provider),
//! trusting only the self-signed certificate the coordinator generated for the run
//! ([`tls_connector`]); the WebSocket upgrade then runs inside it.
//!
//! Also the tokens: HS256 JWTs minted locally from the server's development secret.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<Stream>;

/// The name the run's certificate is issued for (and the client checks).
pub const TLS_NAME: &str = "localhost";

/// A client socket: plain TCP, or TLS over it (boxed: the TLS state is large and only
/// `--tls` runs pay for it).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TLS connector trusting only the certificate(s) in `ca_pem` (the run's self-signed
/// certificate).
pub fn tls_connector(ca_pem: &str) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|e| format!("CA certificate: {e}"))?;
        roots.add(c).map_err(|e| format!("CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no PEM certificate to trust".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// How long one connect + upgrade may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Small buffers: a worker holds up to ~9,000 connections. `subscribed` replies can carry a
/// large presence list, so the message limit stays generous.
pub fn ws_config(write_buffer_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(write_buffer_bytes)
        .max_write_buffer_size(16 << 20)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// Connects from `source` (port chosen at connect time, so each source address has the
/// whole ephemeral range towards the server), runs the TLS handshake when `tls` is given,
/// and upgrades with `token`.
pub async fn connect(
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    token: &str,
    write_buffer_bytes: usize,
    tls: Option<&TlsConnector>,
) -> Result<Ws, String> {
    let fut = async {
        let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = source {
            set_bind_address_no_port(&sock);
            sock.bind(SocketAddr::new(ip.into(), 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let stream = sock
            .connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(t) => {
                let name = ServerName::try_from(TLS_NAME).expect("a valid DNS name");
                let s = t
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                Stream::Tls(Box::new(s))
            }
        };
        let mut req = format!("ws://{addr}/ws")
            .into_client_request()
            .map_err(|e| format!("request: {e}"))?;
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}")
                .parse()
                .map_err(|e| format!("header: {e}"))?,
        );
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            req,
            stream,
            Some(ws_config(write_buffer_bytes)),
        )
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
        Ok(ws)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err("connect + upgrade timed out".into()),
    }
}

/// IP_BIND_ADDRESS_NO_PORT: bind() picks no port, connect() picks one unique for the
/// 4-tuple. Without it every source address is limited to one ephemeral range for all
/// destinations together, and bind() fails first.
fn set_bind_address_no_port(sock: &TcpSocket) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Mints tokens for the run (all in organization `perf`, valid 6 hours).
pub struct Minter {
    key: EncodingKey,
    header: Header,
    now_s: u64,
}

impl Minter {
    pub fn new(secret: &str) -> Minter {
        Minter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::new(Algorithm::HS256),
            now_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// A token for `sub`. Tier: `enterprise` (the one the run's config lifts) for `service`
    /// users that create channels and publish, `professional` (defaults) for the others.
    pub fn token(&self, sub: &str, role: &str, weddings: &[&str]) -> String {
        let tier = if role == "service" {
            "enterprise"
        } else {
            "professional"
        };
        let claims = serde_json::json!({
            "sub": sub, "org": "perf", "role": role, "tier": tier,
            "weddings": weddings, "exp": self.now_s + 6 * 3600, "nbf": self.now_s - 60,
        });
        jsonwebtoken::encode(&self.header, &claims, &self.key).expect("HS256 encoding")
    }
}
