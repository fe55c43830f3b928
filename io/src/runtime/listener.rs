//! The shard listeners: one SO_REUSEPORT socket per shard on the shared port (built with
//! socket2 for a deep backlog), the check that no other process joined the port's group,
//! and each shard's accept loop, which ends when the server shuts down.
//!
//! It does not serve connections (`conn.rs`, `api.rs`) or decide when to stop (`mod.rs`).

use super::shutdown::OpenSockets;
use crate::conn;
use crate::host::ShardCtx;
use socket2::{Domain, Protocol, Socket, Type};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;

/// Accepts connections on this shard's listener and serves each in a task of its own,
/// counted in `open` until it ends, until `shutdown` completes; then the listener closes.
/// Out of file descriptors, a waiting client is answered 503 from the reserve descriptor
/// and accepting pauses for [`crate::fds::ACCEPT_RETRY_PAUSE`] (`fds.rs`).
pub(super) async fn accept_until(
    ctx: Rc<ShardCtx>,
    doors: Rc<conn::Doors>,
    listener: glommio::net::TcpListener,
    listener_fd: RawFd,
    me: usize,
    open: Rc<OpenSockets>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let accept = async {
        let reserve = Rc::new(RefCell::new(crate::fds::Reserve::new()));
        let mut errors = crate::fds::AcceptErrors::default();
        // Tries left in the locked mode (`fds::accept_locked`) entered when descriptors ran
        // out; 0: io_uring accepts.
        let mut locked_tries = 0u32;
        loop {
            if locked_tries > 0 {
                glommio::timer::sleep(crate::fds::ACCEPT_RETRY_PAUSE).await;
                use crate::fds::LockedAccept;
                let got = crate::fds::accept_locked(&mut reserve.borrow_mut(), listener_fd);
                match got {
                    LockedAccept::Normal(fd) => {
                        // SAFETY: a connected TCP socket just accepted, owned from here on.
                        let s = unsafe { glommio::net::TcpStream::from_raw_fd(fd) };
                        let counted = open.enter();
                        let (ctx, doors) = (ctx.clone(), doors.clone());
                        glommio::spawn_local(async move {
                            conn::serve(ctx, doors, s).await;
                            drop(counted);
                        })
                        .detach();
                        locked_tries = crate::fds::LOCKED_ACCEPT_IDLE_TRIES;
                    }
                    LockedAccept::Reserve(fd) => {
                        // SAFETY: as above.
                        let s = unsafe { glommio::net::TcpStream::from_raw_fd(fd) };
                        spawn_overloaded(&ctx, &open, &reserve, s);
                        let e = io::Error::from_raw_os_error(libc::EMFILE);
                        errors.record(me, &e, true, ctx.shared.open_files_limit);
                        locked_tries = crate::fds::LOCKED_ACCEPT_IDLE_TRIES;
                    }
                    LockedAccept::Refused => {
                        let e = io::Error::from_raw_os_error(libc::EMFILE);
                        errors.record(me, &e, false, ctx.shared.open_files_limit);
                        locked_tries = crate::fds::LOCKED_ACCEPT_IDLE_TRIES;
                    }
                    LockedAccept::Idle => locked_tries -= 1,
                }
                continue;
            }
            let e = match listener.accept().await {
                Ok(s) => {
                    let counted = open.enter();
                    let (ctx, doors) = (ctx.clone(), doors.clone());
                    glommio::spawn_local(async move {
                        conn::serve(ctx, doors, s).await;
                        drop(counted);
                    })
                    .detach();
                    continue;
                }
                Err(e) => io::Error::from(e),
            };
            let mut answered = false;
            if crate::fds::out_of_descriptors(&e) {
                // A waiting client is accepted into the reserve's slot, answered 503 and
                // closed; then the slot is taken back.
                reserve.borrow_mut().restore();
                let fd = crate::fds::accept_into_reserve(&mut reserve.borrow_mut(), listener_fd);
                if let Some(fd) = fd {
                    answered = true;
                    // SAFETY: a connected TCP socket just accepted, owned from here on.
                    let s = unsafe { glommio::net::TcpStream::from_raw_fd(fd) };
                    spawn_overloaded(&ctx, &open, &reserve, s);
                }
                // Until clients stop waiting, accept only under the reserve lock.
                locked_tries = crate::fds::LOCKED_ACCEPT_IDLE_TRIES;
            }
            errors.record(me, &e, answered, ctx.shared.open_files_limit);
            if locked_tries == 0 {
                glommio::timer::sleep(crate::fds::ACCEPT_RETRY_PAUSE).await;
            }
        }
    };
    futures_lite::future::or(accept, shutdown).await;
    drop(listener);
}

/// Answers a client accepted into the reserve's slot 503, then keeps its socket as the
/// reserve (its slot is never free in between).
fn spawn_overloaded(
    ctx: &Rc<ShardCtx>,
    open: &Rc<OpenSockets>,
    reserve: &Rc<RefCell<crate::fds::Reserve>>,
    s: glommio::net::TcpStream,
) {
    let (ctx, reserve) = (ctx.clone(), reserve.clone());
    let counted = open.enter();
    glommio::spawn_local(async move {
        match conn::serve_overloaded(ctx, s).await {
            Some(kept) => reserve.borrow_mut().hold(Box::new(kept)),
            None => reserve.borrow_mut().restore(),
        }
        drop(counted);
    })
    .detach();
}

pub(super) fn bind_socket(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into()).map_err(|e| in_use(addr, e))?;
    s.listen(backlog)?;
    Ok(s)
}

/// Names the address in a bind error (`EADDRINUSE` says only "Address already in use").
fn in_use(addr: SocketAddr, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        io::Error::new(
            e.kind(),
            format!("{addr}: address already in use (another process holds it)"),
        )
    } else {
        io::Error::new(e.kind(), format!("binding {addr}: {e}"))
    }
}

/// SO_REUSEPORT lets our shards share one port, but it would also let a second server of
/// the same user join the group silently: the kernel then splits clients between two
/// servers with different secrets and data. So once every shard's socket listens, the
/// kernel's table of TCP sockets (`/proc/net/tcp`, `/proc/net/tcp6`) must show no other
/// listening socket on the port whose address overlaps ours. Two servers starting at once
/// each see the other and both fail; neither can pass unseen, because each looks only after
/// its own sockets listen. (docs/decisions.md §20.)
pub(super) fn check_sole_listener(addr: SocketAddr, ours: &[Socket]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut own = Vec::with_capacity(ours.len());
    for s in ours {
        own.push(socket_inode(s.as_raw_fd())?);
    }
    let mut others = Vec::new();
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            // No IPv6 in this kernel.
            Err(e) if e.kind() == io::ErrorKind::NotFound && v6 => continue,
            Err(e) => {
                return Err(io::Error::other(format!(
                    "reading {table} to check that no other process listens on {addr}: {e}"
                )))
            }
        };
        for (other, inode) in listening_sockets(&text, v6) {
            if !own.contains(&inode) && overlaps(addr, other) {
                others.push(other);
            }
        }
    }
    match others.first() {
        None => Ok(()),
        Some(other) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{addr}: address already in use (another process listens on {other} with SO_REUSEPORT; two servers on one port would split the clients between them)"
            ),
        )),
    }
}

/// The inode of socket `fd` (from `/proc/self/fd/FD` → `socket:[INODE]`).
fn socket_inode(fd: i32) -> io::Result<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
    link.to_str()
        .and_then(|l| l.strip_prefix("socket:["))
        .and_then(|l| l.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other(format!("fd {fd} is not a socket: {link:?}")))
}

/// `(local address, inode)` of every LISTEN socket in a `/proc/net/tcp{,6}` table.
fn listening_sockets(table: &str, v6: bool) -> Vec<(SocketAddr, u64)> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        if f.len() < 10 || f[3] != "0A" {
            continue;
        }
        let (Some((ip, port)), Ok(inode)) = (f[1].split_once(':'), f[9].parse::<u64>()) else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        // The kernel prints each 32-bit word of the address as a native-endian number.
        let mut bytes = Vec::with_capacity(16);
        for i in (0..ip.len()).step_by(8) {
            match ip.get(i..i + 8).map(|w| u32::from_str_radix(w, 16)) {
                Some(Ok(w)) => bytes.extend_from_slice(&w.to_ne_bytes()),
                _ => break,
            }
        }
        let ip: std::net::IpAddr = match (v6, bytes.len()) {
            (false, 4) => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into(),
            (true, 16) => {
                let b: [u8; 16] = bytes.try_into().expect("16 bytes");
                std::net::Ipv6Addr::from(b).into()
            }
            _ => continue,
        };
        out.push((SocketAddr::new(ip, port), inode));
    }
    out
}

/// Whether a socket listening on `b` takes connections meant for `a`: same port, and the
/// same address or either a wildcard. An IPv6 wildcard counts for IPv4 too (a dual-stack
/// socket; the table does not say whether it is `IPV6_V6ONLY`).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    use std::net::IpAddr;
    let norm = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if a.port() != b.port() {
        return false;
    }
    let (x, y) = (norm(a.ip()), norm(b.ip()));
    let v6_any = |ip: IpAddr| ip.is_ipv6() && ip.is_unspecified();
    if v6_any(x) || v6_any(y) {
        return true;
    }
    x.is_ipv4() == y.is_ipv4() && (x == y || x.is_unspecified() || y.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tables_are_read() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1292 1 000000004d9e34a5 100 0 0 10 0\n   1: 0100007F:AFAD 0100007F:A214 06 00000000:00000000 03:00000ED8 00000000     0        0 0 3 00000000f1f82f52\n   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n";
        assert_eq!(
            listening_sockets(v4, false),
            vec![
                ("0.0.0.0:2024".parse().unwrap(), 1292),
                ("127.0.0.1:8080".parse().unwrap(), 4242)
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0\n";
        assert_eq!(
            listening_sockets(v6, true),
            vec![("[::1]:8080".parse().unwrap(), 77)]
        );
    }

    #[test]
    fn overlapping_addresses() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("127.0.0.1:8080"), a("127.0.0.1:8080")));
        assert!(overlaps(a("127.0.0.1:8080"), a("0.0.0.0:8080")));
        assert!(overlaps(a("0.0.0.0:8080"), a("10.1.2.3:8080")));
        assert!(overlaps(a("127.0.0.1:8080"), a("[::]:8080")));
        assert!(overlaps(a("127.0.0.1:8080"), a("[::ffff:127.0.0.1]:8080")));
        assert!(!overlaps(a("127.0.0.1:8080"), a("127.0.0.1:8081")));
        assert!(!overlaps(a("127.0.0.1:8080"), a("127.0.0.2:8080")));
        assert!(!overlaps(a("127.0.0.1:8080"), a("[::1]:8080")));
    }

    /// A second group of SO_REUSEPORT sockets on our port is found; our own are not.
    #[test]
    fn another_reuseport_listener_is_found() {
        let ours = bind_socket("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = ours.local_addr().unwrap().as_socket().unwrap();
        check_sole_listener(addr, std::slice::from_ref(&ours)).unwrap();
        let intruder = bind_socket(addr, 16).unwrap();
        let e = check_sole_listener(addr, std::slice::from_ref(&ours)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(
            e.to_string()
                .contains(&format!("{addr}: address already in use")),
            "{e}"
        );
        drop(intruder);
        check_sole_listener(addr, std::slice::from_ref(&ours)).unwrap();
    }
}
