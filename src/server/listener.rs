//! Turning the builder's interface string into bound listeners.

use super::StartError;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::task::{Context, Poll};
#[cfg(not(any(target_os = "linux", target_os = "android")))]
use tokio::net::TcpListener;
use tokio::net::{TcpStream, UnixStream};
use tracing::warn;

/// Pending connections the kernel queues for us (the same as nginx's default
/// on Linux would be capped to by `somaxconn`).
const BACKLOG: i32 = 1024;

/// Where to listen, and whether that address may be missing on this machine.
struct Target {
    ip: IpAddr,
    /// Serve IPv4 on an IPv6 socket too (`::` with `with_ipv6`).
    dual_stack: bool,
    /// A failure to bind is a warning, not an error (`::1` added to
    /// `localhost` on a machine without IPv6).
    optional: bool,
}

fn targets(interface: &str, ipv6: bool) -> Result<Vec<Target>, StartError> {
    let invalid = || StartError::InvalidInterface(interface.to_string());
    let trimmed = interface.trim();
    if trimmed.eq_ignore_ascii_case("localhost") {
        let mut targets = vec![Target {
            ip: Ipv4Addr::LOCALHOST.into(),
            dual_stack: false,
            optional: false,
        }];
        if ipv6 {
            targets.push(Target {
                ip: Ipv6Addr::LOCALHOST.into(),
                dual_stack: false,
                optional: true,
            });
        }
        return Ok(targets);
    }
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(trimmed);
    let ip: IpAddr = unbracketed.parse().map_err(|_| invalid())?;
    Ok(match ip {
        ip if ip.is_unspecified() && ipv6 => {
            vec![Target {
                ip: Ipv6Addr::UNSPECIFIED.into(),
                dual_stack: true,
                optional: false,
            }]
        }
        ip => vec![Target {
            ip,
            dual_stack: false,
            optional: false,
        }],
    })
}

pub(super) fn bind(interface: &str, port: u16, ipv6: bool) -> Result<Vec<Listener>, StartError> {
    let mut listeners: Vec<Listener> = Vec::new();
    for target in targets(interface, ipv6)? {
        // A second listener (`::1` beside `127.0.0.1`) takes the port the
        // first one got, so that port 0 means one port for both.
        let port = listeners
            .first()
            .and_then(Listener::tcp_addr)
            .map_or(port, |first| first.port());
        let address = SocketAddr::new(target.ip, port);
        match bind_one(address, target.dual_stack) {
            Ok(listener) => listeners.push(listener),
            Err(source) if target.optional => {
                warn!(%address, %source, "not listening on this address");
            }
            Err(source) => return Err(StartError::Bind { address, source }),
        }
    }
    Ok(listeners)
}

fn bind_one(address: SocketAddr, dual_stack: bool) -> std::io::Result<Listener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // Restarting a server must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(!dual_stack)?;
    }
    socket.set_nonblocking(true)?;
    // Responses are written whole or in large pieces: Nagle's delay would
    // only add latency. Linux gives accepted sockets the listener's
    // TCP_NODELAY, which saves a system call per connection (elsewhere the
    // accept loop sets it on each one).
    socket.set_nodelay(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    let addr = Addr::Tcp(
        socket
            .local_addr()?
            .as_socket()
            .ok_or(io::ErrorKind::InvalidInput)?,
    );
    Listener::new(socket.into(), addr)
}

/// Takes over a listener the caller bound (see
/// [`Builder::listener`](crate::Builder::listener)): it must be a listening
/// stream socket; it is made non-blocking and given `TCP_NODELAY`, as the
/// listeners mist binds itself are.
pub(super) fn adopt(listener: std::net::TcpListener) -> io::Result<Listener> {
    check_listening(&listener)?;
    let socket = socket2::SockRef::from(&listener);
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    let addr = Addr::Tcp(listener.local_addr()?);
    Listener::new(listener.into(), addr)
}

/// Takes over a Unix domain socket the caller bound (see
/// [`Builder::unix_listener`](crate::Builder::unix_listener)), on the
/// same conditions as [`adopt`].
pub(super) fn adopt_unix(listener: std::os::unix::net::UnixListener) -> io::Result<Listener> {
    check_listening(&listener)?;
    listener.set_nonblocking(true)?;
    let addr = Addr::Unix(listener.local_addr()?);
    Listener::new(listener.into(), addr)
}

/// A socket handed to mist must be a stream socket that listens.
fn check_listening(listener: &impl AsFd) -> io::Result<()> {
    let socket = socket2::SockRef::from(listener);
    if socket.r#type()? != Type::STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket is not a stream socket",
        ));
    }
    // A socket that was bound but never told to `listen` would fail every
    // accept with EINVAL, which the accept loop would take for a shortage
    // and retry forever. (Apple's systems do not answer SO_ACCEPTCONN.)
    #[cfg(not(target_vendor = "apple"))]
    if !rustix::net::sockopt::socket_acceptconn(listener)? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket is bound but not listening (call listen(2) first)",
        ));
    }
    Ok(())
}

/// Where a listener listens.
pub(super) enum Addr {
    Tcp(SocketAddr),
    Unix(std::os::unix::net::SocketAddr),
}

/// A connection just accepted.
pub(super) enum Accepted {
    /// With the client's address.
    Tcp(TcpStream, SocketAddr),
    /// A Unix domain socket's client has no address worth telling.
    Unix(UnixStream),
}

/// A bound, listening socket registered with the reactor: TCP or a Unix
/// domain socket.
///
/// On Linux it accepts through `accept4(2)` itself instead of tokio's
/// `accept`, which marks every new socket readable so that its first read
/// is tried at once. A client's request mostly arrives a moment after its
/// connection is accepted, and then that read fails with `EAGAIN`: one
/// system call per connection for nothing (measured: two `recvfrom` per
/// connection under `Connection: close` load, against nginx's one). A
/// socket registered here starts with no readiness and is read once the
/// reactor reports it, as nginx does (without `deferred`). A request that
/// is already there is not missed: the socket is registered edge-triggered
/// with the bytes pending, so the reactor's next poll reports it (one turn
/// of the scheduler later than tokio's guess, `docs/performance.md` item
/// 22).
pub(super) struct Listener {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    io: tokio::io::unix::AsyncFd<OwnedFd>,
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    io: Io,
    /// Where it listens, read once when it is made; also tells which kind
    /// of socket it is.
    addr: Addr,
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
enum Io {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    fn new(listener: OwnedFd, addr: Addr) -> io::Result<Listener> {
        // Deprecated in tokio 1.54 for types whose descriptor can change
        // under the `AsyncFd` (tokio#8587); an `OwnedFd` owns its one
        // descriptor for its whole life, which is the condition the
        // replacement (an `unsafe fn`, and this crate forbids unsafe code)
        // asks its callers to promise.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        #[allow(deprecated)]
        let io = tokio::io::unix::AsyncFd::with_interest(listener, tokio::io::Interest::READABLE)?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let io = match addr {
            Addr::Tcp(_) => Io::Tcp(TcpListener::from_std(listener.into())?),
            Addr::Unix(_) => Io::Unix(tokio::net::UnixListener::from_std(listener.into())?),
        };
        Ok(Listener { io, addr })
    }

    pub(super) fn addr(&self) -> &Addr {
        &self.addr
    }

    /// Where a TCP listener listens.
    fn tcp_addr(&self) -> Option<SocketAddr> {
        match self.addr {
            Addr::Tcp(addr) => Some(addr),
            Addr::Unix(_) => None,
        }
    }

    /// Accepts the next connection, or registers the waker.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Accepted>> {
        use rustix::net::{acceptfrom_with, SocketFlags};
        loop {
            let mut ready = std::task::ready!(self.io.poll_read_ready(cx))?;
            // `Err`: it would block, and the readiness is cleared; polling
            // again registers the waker.
            let Ok(accepted) = ready.try_io(|listener| {
                acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)
                    .map_err(io::Error::from)
            }) else {
                continue;
            };
            let (fd, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => return Poll::Ready(Err(err)),
            };
            return Poll::Ready(match self.addr {
                Addr::Unix(_) => UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
                    .map(Accepted::Unix),
                Addr::Tcp(_) => {
                    // Cannot happen on a TCP listener; if it did, it would
                    // concern this connection only (no backoff).
                    let peer = peer
                        .and_then(|peer| SocketAddr::try_from(peer).ok())
                        .ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::ConnectionAborted,
                                "accepted a socket without an IP peer",
                            )
                        });
                    peer.and_then(|peer| {
                        let stream = TcpStream::from_std(std::net::TcpStream::from(fd))?;
                        Ok(Accepted::Tcp(stream, peer))
                    })
                }
            });
        }
    }

    /// Accepts the next connection, or registers the waker.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Accepted>> {
        match &self.io {
            Io::Tcp(listener) => listener
                .poll_accept(cx)
                .map_ok(|(stream, peer)| Accepted::Tcp(stream, peer)),
            Io::Unix(listener) => listener
                .poll_accept(cx)
                .map_ok(|(stream, _)| Accepted::Unix(stream)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces() {
        assert_eq!(targets("localhost", false).unwrap().len(), 1);
        assert_eq!(targets("localhost", true).unwrap().len(), 2);
        assert!(targets("0.0.0.0", true).unwrap()[0].dual_stack);
        assert_eq!(targets("[::1]", false).unwrap()[0].ip, Ipv6Addr::LOCALHOST);
        assert!(matches!(
            targets("example.com", false),
            Err(StartError::InvalidInterface(_))
        ));
        assert!(matches!(
            targets("300.1.1.1", false),
            Err(StartError::InvalidInterface(_))
        ));
    }

    /// The accept loop relies on this on Linux instead of a system call per
    /// connection.
    #[tokio::test]
    async fn accepted_sockets_inherit_tcp_nodelay() {
        let listener = bind_one("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let client = tokio::net::TcpStream::connect(listener.tcp_addr().unwrap())
            .await
            .unwrap();
        let accepted = std::future::poll_fn(|cx| listener.poll_accept(cx))
            .await
            .unwrap();
        let Accepted::Tcp(accepted, _) = accepted else {
            panic!("a TCP listener accepted a Unix socket")
        };
        assert!(accepted.nodelay().unwrap());
        drop(client);
    }

    /// An accepted socket waits for the reactor before its first read: the
    /// readiness event must come both for bytes that were already there at
    /// the accept and for bytes sent after it.
    #[tokio::test]
    async fn accepted_sockets_are_read_when_bytes_arrive() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind_one("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.tcp_addr().unwrap();
        let accept = || async {
            match std::future::poll_fn(|cx| listener.poll_accept(cx)).await {
                Ok(Accepted::Tcp(stream, peer)) => Ok((stream, peer)),
                Ok(Accepted::Unix(_)) => panic!("a TCP listener accepted a Unix socket"),
                Err(err) => Err(err),
            }
        };
        let within = std::time::Duration::from_secs(10);

        let mut early = TcpStream::connect(addr).await.unwrap();
        early.write_all(b"before").await.unwrap();
        let (mut accepted, peer) = accept().await.unwrap();
        assert_eq!(peer, early.local_addr().unwrap());
        let mut buf = [0u8; 6];
        tokio::time::timeout(within, accepted.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"before");

        let mut late = TcpStream::connect(addr).await.unwrap();
        let (mut accepted, _) = accept().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 5];
            accepted.read_exact(&mut buf).await.map(|_| buf)
        });
        tokio::task::yield_now().await;
        late.write_all(b"after").await.unwrap();
        assert_eq!(
            &tokio::time::timeout(within, reader)
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
            b"after"
        );
    }
}
