//! Who is on the other end of a connection.

use crate::body::Connection;
use crate::tls::PeerCertificates;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The address and port of a connected client: mist's `ConnectionInfo`.
///
/// It prints as a socket address, and converts into a
/// `std::net::SocketAddr`:
///
/// ```
/// use mist::{ConnectionInfo, IpAddress};
/// use std::net::SocketAddr;
/// let info = ConnectionInfo { port: 51000, ip_address: IpAddress::V4(127, 0, 0, 1) };
/// assert_eq!(format!("{} {}", info.ip_address, info.port), "127.0.0.1 51000");
/// assert_eq!(info.to_string(), "127.0.0.1:51000");
/// let v6 = ConnectionInfo { port: 443, ip_address: IpAddress::V6(0, 0, 0, 0, 0, 0, 0, 1) };
/// assert_eq!(v6.to_string(), "[::1]:443");
/// assert_eq!(SocketAddr::from(v6), "[::1]:443".parse().unwrap());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionInfo {
    /// The client's TCP port.
    pub port: u16,
    /// The client's IP address.
    pub ip_address: IpAddress,
}

impl From<ConnectionInfo> for SocketAddr {
    fn from(info: ConnectionInfo) -> Self {
        SocketAddr::new(info.ip_address.into(), info.port)
    }
}

/// `IP:PORT`, with an IPv6 address in brackets.
impl fmt::Display for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&SocketAddr::from(*self), f)
    }
}

/// An IP address in mist's shape: four bytes or eight 16-bit groups.
///
/// IPv4 clients reaching an IPv6 socket (IPv4-mapped addresses such as
/// `::ffff:127.0.0.1`) are reported as `V4`.
///
/// ```
/// use mist::{ip_address_to_string, IpAddress};
/// assert_eq!(ip_address_to_string(&IpAddress::V6(0, 0, 0, 0, 0, 0, 0, 1)), "::1");
/// assert_eq!(IpAddress::V4(127, 0, 0, 1).to_string(), "127.0.0.1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpAddress {
    /// An IPv4 address, one field per byte.
    V4(u8, u8, u8, u8),
    /// An IPv6 address, one field per 16-bit group.
    V6(u16, u16, u16, u16, u16, u16, u16, u16),
}

impl From<IpAddr> for IpAddress {
    fn from(ip: IpAddr) -> Self {
        let v4 = match ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => {
                    let [a, b, c, d, e, f, g, h] = v6.segments();
                    return IpAddress::V6(a, b, c, d, e, f, g, h);
                }
            },
        };
        let [a, b, c, d] = v4.octets();
        IpAddress::V4(a, b, c, d)
    }
}

impl From<IpAddress> for IpAddr {
    fn from(ip: IpAddress) -> Self {
        match ip {
            IpAddress::V4(a, b, c, d) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            IpAddress::V6(a, b, c, d, e, f, g, h) => {
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
            }
        }
    }
}

/// Writes the address as [`ip_address_to_string`] does.
impl fmt::Display for IpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // std writes IPv6 in the RFC 5952 canonical form: lowercase hex, the
        // longest run of zero groups compressed to `::`.
        fmt::Display::fmt(&IpAddr::from(*self), f)
    }
}

/// Writes an address as text: dotted quad for IPv4, RFC 5952 for IPv6
/// (so the loopback is `::1`).
///
/// ```
/// use mist::{ip_address_to_string, IpAddress};
/// assert_eq!(ip_address_to_string(&IpAddress::V4(10, 0, 0, 7)), "10.0.0.7");
/// assert_eq!(ip_address_to_string(&IpAddress::V6(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1)), "2001:db8::1:0:0:1");
/// ```
pub fn ip_address_to_string(address: &IpAddress) -> String {
    address.to_string()
}

/// The connection's peer is not known: it came over a Unix domain socket
/// (whose client is described by [`PeerCredentials`] instead).
///
/// ```
/// let err = mist::ClientInfoUnavailable;
/// assert_eq!(err.to_string(), "the client's address is not known");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfoUnavailable;

impl fmt::Display for ClientInfoUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the client's address is not known")
    }
}

impl std::error::Error for ClientInfoUnavailable {}

/// The address and port of the client that sent the request;
/// [`ClientInfoUnavailable`] over a Unix domain socket.
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, ResponseData};
///
/// async fn whoami(req: Request<Connection>) -> Response<ResponseData> {
///     let text = match mist::get_client_info(req.body()) {
///         Ok(info) => format!("{} {}", mist::ip_address_to_string(&info.ip_address), info.port),
///         Err(_) => "unknown".to_string(),
///     };
///     Response::new(ResponseData::from(text))
/// }
/// ```
pub fn get_client_info(conn: &Connection) -> Result<ConnectionInfo, ClientInfoUnavailable> {
    let peer = conn.peer.ok_or(ClientInfoUnavailable)?;
    Ok(ConnectionInfo {
        port: peer.port(),
        ip_address: IpAddress::from(peer.ip()),
    })
}

/// The process at the other end of a Unix domain socket, as the kernel
/// recorded it when it connected (`SO_PEERCRED`): its user, group and
/// process IDs, which a client cannot forge. A request that came over a
/// Unix domain socket (see
/// [`Builder::unix_listener`](crate::Builder::unix_listener)) carries it
/// as an extension, over HTTP/1.1 and every HTTP/2 stream alike, also
/// through [`Builder::read_request_body`](crate::Builder::read_request_body);
/// over TCP there is none. For a local service that lets only some users
/// in, on top of the socket file's permissions.
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, PeerCredentials, ResponseData};
///
/// async fn handler(req: Request<Connection>) -> Response<ResponseData> {
///     match req.extensions().get::<PeerCredentials>() {
///         Some(peer) if peer.uid == 0 => Response::new(ResponseData::from("hello, root")),
///         Some(peer) => Response::new(ResponseData::from(format!("hello, user {}", peer.uid))),
///         None => Response::builder()
///             .status(403)
///             .body(ResponseData::from("local clients only"))
///             .unwrap(),
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PeerCredentials {
    /// The client process's effective user ID.
    pub uid: u32,
    /// Its effective group ID.
    pub gid: u32,
    /// Its process ID, where the system tells it (Linux does).
    pub pid: Option<i32>,
}

impl PeerCredentials {
    /// Credentials as the kernel would give them: for a handler's unit
    /// tests, which insert them into a request's extensions themselves.
    ///
    /// ```
    /// let peer = mist::PeerCredentials::new(1000, 1000, Some(4242));
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert(peer);
    /// assert_eq!(req.extensions().get::<mist::PeerCredentials>().unwrap().uid, 1000);
    /// ```
    pub fn new(uid: u32, gid: u32, pid: Option<i32>) -> PeerCredentials {
        PeerCredentials { uid, gid, pid }
    }

    /// Asks the kernel about the process at the other end of `stream`.
    pub(crate) fn of(stream: &tokio::net::UnixStream) -> std::io::Result<PeerCredentials> {
        let credentials = stream.peer_cred()?;
        Ok(PeerCredentials {
            uid: credentials.uid(),
            gid: credentials.gid(),
            pid: credentials.pid(),
        })
    }
}

/// What a connection's client proved about itself, for every request's
/// extensions: TLS client certificates, or a Unix socket's credentials.
/// Inserted where the request is built (`parse_head`, the HTTP/2 stream),
/// so that a connection without either pays one branch per request; boxed,
/// so that it pays 8 bytes for it (every idle connection keeps it).
#[derive(Clone, Default)]
pub(crate) struct Identity(Option<Box<Proved>>);

#[derive(Clone, Default)]
struct Proved {
    certificates: Option<PeerCertificates>,
    credentials: Option<PeerCredentials>,
}

impl Identity {
    fn proved(&mut self) -> &mut Proved {
        self.0.get_or_insert_with(Box::default)
    }

    pub(crate) fn set_certificates(&mut self, chain: PeerCertificates) {
        self.proved().certificates = Some(chain);
    }

    pub(crate) fn set_credentials(&mut self, credentials: PeerCredentials) {
        self.proved().credentials = Some(credentials);
    }

    pub(crate) fn insert_into(&self, extensions: &mut http::Extensions) {
        let Some(proved) = &self.0 else {
            return;
        };
        if let Some(chain) = &proved.certificates {
            extensions.insert(chain.clone());
        }
        if let Some(credentials) = proved.credentials {
            extensions.insert(credentials);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv6_is_reported_as_v4() {
        let ip: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(IpAddress::from(ip), IpAddress::V4(192, 0, 2, 1));
    }

    #[test]
    fn rfc5952_text() {
        let ip: IpAddr = "2001:0DB8:0000:0000:0000:0000:0002:0001".parse().unwrap();
        assert_eq!(ip_address_to_string(&IpAddress::from(ip)), "2001:db8::2:1");
        assert_eq!(
            ip_address_to_string(&IpAddress::V6(0, 0, 0, 0, 0, 0, 0, 0)),
            "::"
        );
    }
}
