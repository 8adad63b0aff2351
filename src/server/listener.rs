//! Turning the builder's interface string into bound listeners.

use super::StartError;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::net::TcpListener;
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

pub(super) fn bind(interface: &str, port: u16, ipv6: bool) -> Result<Vec<TcpListener>, StartError> {
    let mut listeners: Vec<TcpListener> = Vec::new();
    for target in targets(interface, ipv6)? {
        // A second listener (`::1` beside `127.0.0.1`) takes the port the
        // first one got, so that port 0 means one port for both.
        let port = match listeners.first().map(TcpListener::local_addr) {
            Some(Ok(addr)) => addr.port(),
            _ => port,
        };
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

fn bind_one(address: SocketAddr, dual_stack: bool) -> std::io::Result<TcpListener> {
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
    TcpListener::from_std(socket.into())
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
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
        drop(client);
    }
}
