//! HTTPS: loading a certificate and its key, the TLS handshake of each
//! connection, and swapping the certificate while the server runs.
//!
//! TLS is rustls with the `ring` provider, TLS 1.3 and 1.2, ALPN
//! `http/1.1` (and `h2` with [`Builder::with_http2`]). The handshake runs
//! in the connection's own task, bounded by
//! [`Builder::tls_handshake_timeout`]; then the engine ALPN chose serves
//! the encrypted stream exactly as it serves a plain one.

use crate::body::Connection;
use crate::builder::{Builder, Handler};
use crate::h1::dispatch::{self, ConnContext};
use crate::io::{deadline_after, Plain, Socket};
use crate::server::{Server, StartError};
use bytes::BytesMut;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

/// The ALPN protocols accepted, most preferred first (RFC 7301). `http/1.0`
/// too, as nginx does: a client that offers only it (`curl --http1.0`)
/// would otherwise be refused with `no_application_protocol`.
const ALPN: &[&[u8]] = &[b"http/1.1", b"http/1.0"];

/// The same with HTTP/2 ([`Builder::with_http2`]): first, as browsers and
/// curl prefer it when the server does.
const ALPN_WITH_H2: &[&[u8]] = &[b"h2", b"http/1.1", b"http/1.0"];

/// Why a certificate and key could not be used: mist's `CertificateError`,
/// plus what can be wrong with files that exist.
///
/// The first three variants are mist's and mean the files are missing
/// (with the paths asked for: a relative path is read from the working
/// directory, which is often not the one expected); the others name the
/// file at fault.
///
/// ```no_run
/// # async fn f<H: mist::Handler<mist::Connection>>(builder: mist::Builder<H>) {
/// use mist::{CertificateError, HttpsError};
///
/// match builder.start_https("cert.pem", "key.pem").await {
///     Ok(server) => server.wait().await,
///     Err(HttpsError::Certificate(CertificateError::NoKeyOrCertificate { .. })) => {
///         eprintln!("make a certificate first: see the README");
///     }
///     Err(err) => eprintln!("cannot start: {err}"),
/// }
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum CertificateError {
    /// The certificate file does not exist (or is not a file).
    NoCertificate {
        /// The certificate file asked for.
        path: PathBuf,
    },
    /// The private key file does not exist (or is not a file).
    NoKey {
        /// The key file asked for.
        path: PathBuf,
    },
    /// Neither file exists.
    NoKeyOrCertificate {
        /// The certificate file asked for.
        certfile: PathBuf,
        /// The key file asked for.
        keyfile: PathBuf,
    },
    /// A file exists but could not be read (permissions, an I/O error).
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The certificate file holds no usable PEM certificate chain
    /// (`-----BEGIN CERTIFICATE-----` blocks, the server's own first).
    InvalidCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file holds no usable PEM private key: PKCS#8
    /// (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`), unencrypted, RSA, ECDSA or Ed25519.
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key does not belong to the certificate (the first one
    /// in the certificate file).
    KeyMismatch {
        /// The certificate file.
        certfile: PathBuf,
        /// The key file.
        keyfile: PathBuf,
    },
    /// [`Server::reload_certificate`] was called on a server started with
    /// [`Builder::start_http`]: it has no certificate to replace.
    NotHttps,
    /// [`Server::reload_certificate`] was called on a server that serves a
    /// rustls configuration of the caller's
    /// ([`Builder::start_https_with_config`],
    /// [`Server::reload_tls_config`]): a configuration made from the files
    /// would lose its settings. Replace it with
    /// [`Server::reload_tls_config`], or renew through the configuration's
    /// own certificate resolver.
    CustomConfig,
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateError::NoCertificate { path } => {
                write!(f, "the certificate file {} does not exist", path.display())
            }
            CertificateError::NoKey { path } => {
                write!(f, "the private key file {} does not exist", path.display())
            }
            CertificateError::NoKeyOrCertificate { certfile, keyfile } => write!(
                f,
                "neither the certificate file {} nor the private key file {} exists",
                certfile.display(),
                keyfile.display()
            ),
            CertificateError::Unreadable { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            CertificateError::InvalidCertificate { path, reason } => write!(
                f,
                "{} holds no usable PEM certificate chain: {reason}",
                path.display()
            ),
            CertificateError::InvalidKey { path, reason } => write!(
                f,
                "{} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}",
                path.display()
            ),
            CertificateError::KeyMismatch { certfile, keyfile } => write!(
                f,
                "the private key in {} does not belong to the certificate in {}",
                keyfile.display(),
                certfile.display()
            ),
            CertificateError::NotHttps => {
                f.write_str("the server speaks plain HTTP: it has no certificate to replace")
            }
            CertificateError::CustomConfig => f.write_str(
                "the server serves a rustls configuration of its own: replace it with reload_tls_config",
            ),
        }
    }
}

impl std::error::Error for CertificateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CertificateError::Unreadable { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why an HTTPS server could not start: mist's `start_https` error.
///
/// ```no_run
/// # async fn f() {
/// use mist::{CertificateError, HttpsError};
///
/// let result = mist::new(|_: http::Request<mist::Connection>| async {
///     http::Response::new(mist::ResponseData::empty())
/// })
/// .start_https("/no/such/cert.pem", "/no/such/key.pem")
/// .await;
/// assert!(matches!(
///     result,
///     Err(HttpsError::Certificate(CertificateError::NoKeyOrCertificate { .. }))
/// ));
/// # }
/// ```
#[derive(Debug)]
pub enum HttpsError {
    /// The listener could not start (see [`StartError`]).
    Start(StartError),
    /// The certificate or its key could not be used.
    Certificate(CertificateError),
}

impl fmt::Display for HttpsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpsError::Start(err) => err.fmt(f),
            HttpsError::Certificate(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for HttpsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpsError::Start(err) => Some(err),
            HttpsError::Certificate(err) => Some(err),
        }
    }
}

impl From<StartError> for HttpsError {
    fn from(err: StartError) -> Self {
        HttpsError::Start(err)
    }
}

impl From<CertificateError> for HttpsError {
    fn from(err: CertificateError) -> Self {
        HttpsError::Certificate(err)
    }
}

/// Starts serving HTTPS: mist's `start_https`, the same as
/// [`Builder::start_https`].
///
/// `certfile` holds the PEM certificate chain (the server's certificate
/// first, then the intermediates), `keyfile` its PEM private key. Both are
/// read and checked before anything listens; the missing-file errors are
/// mist's ([`CertificateError::NoCertificate`], [`CertificateError::NoKey`],
/// [`CertificateError::NoKeyOrCertificate`]). TLS 1.3 and 1.2 are offered,
/// with ALPN `http/1.1` (and `h2` first with [`Builder::with_http2`]).
/// [`Builder::after_start`] receives
/// [`Scheme::Https`](crate::Scheme::Https) and request URIs carry the
/// `https` scheme. [`Server::reload_certificate`] swaps the certificate
/// later without a restart.
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, ResponseData};
///
/// #[tokio::main]
/// async fn main() -> Result<(), mist::HttpsError> {
///     let builder = mist::new(|_req: Request<Connection>| async {
///         Response::new(ResponseData::from("Hello over TLS!"))
///     })
///     .port(4443);
///     let server = mist::start_https(builder, "cert.pem", "key.pem").await?;
///     // prints "Listening on https://127.0.0.1:4443"
///     server.wait().await;
///     Ok(())
/// }
/// ```
pub async fn start_https<H: Handler<Connection>>(
    builder: Builder<H, Connection>,
    certfile: impl AsRef<Path>,
    keyfile: impl AsRef<Path>,
) -> Result<Server, HttpsError> {
    builder.start_https(certfile, keyfile).await
}

/// The configuration new handshakes use, swappable while the server runs.
/// Each handshake takes the current `ServerConfig` (an `Arc` clone under a
/// read lock held for no longer than that); a connection keeps the one it
/// started with.
pub(crate) struct Certificates {
    current: RwLock<Current>,
    /// `h2` is offered in ALPN.
    http2: bool,
}

struct Current {
    config: Arc<ServerConfig>,
    /// Made by the caller ([`Builder::start_https_with_config`]): a reload
    /// from files would silently drop its settings (client certificates,
    /// SNI), so only [`Server::reload_tls_config`] replaces it.
    custom: bool,
}

impl Certificates {
    /// Reads and checks a certificate chain and its key.
    pub(crate) fn load(
        certfile: &Path,
        keyfile: &Path,
        http2: bool,
    ) -> Result<Certificates, CertificateError> {
        Ok(Certificates {
            current: RwLock::new(Current {
                config: Arc::new(server_config(certfile, keyfile, http2)?),
                custom: false,
            }),
            http2,
        })
    }

    /// Serves with a configuration the caller made.
    pub(crate) fn custom(config: ServerConfig, http2: bool) -> Certificates {
        Certificates {
            current: RwLock::new(Current {
                config: Arc::new(adapt(config, http2)),
                custom: true,
            }),
            http2,
        }
    }

    /// Replaces the certificate for new handshakes, if the new one is
    /// usable; otherwise the old one stays.
    pub(crate) fn reload(&self, certfile: &Path, keyfile: &Path) -> Result<(), CertificateError> {
        if self.read().custom {
            return Err(CertificateError::CustomConfig);
        }
        let config = Arc::new(server_config(certfile, keyfile, self.http2)?);
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock: a `reload_tls_config` may have
        // come in while the files were read.
        if current.custom {
            return Err(CertificateError::CustomConfig);
        }
        current.config = config;
        debug!(certfile = %certfile.display(), "certificate reloaded");
        Ok(())
    }

    /// Replaces the whole configuration for new handshakes.
    pub(crate) fn replace(&self, config: ServerConfig) {
        let config = Arc::new(adapt(config, self.http2));
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Current {
            config,
            custom: true,
        };
        debug!("TLS configuration replaced");
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.read().config))
    }
}

/// What mist changes in a configuration the caller made: the ALPN
/// protocols must be those the engines speak (a client told `h2` by a
/// server without HTTP/2 would send frames the HTTP/1.1 parser refuses),
/// and 0-RTT early data stays off, since a replayed request is not safe
/// for a handler that does not expect replays.
fn adapt(mut config: ServerConfig, http2: bool) -> ServerConfig {
    let alpn = if http2 { ALPN_WITH_H2 } else { ALPN };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.max_early_data_size = 0;
    config
}

/// The certificate chain a client presented in the TLS handshake, in the
/// request's extensions on HTTPS connections where the client sent one.
///
/// A client sends certificates only when the server asks: start with
/// [`Builder::start_https_with_config`] and a `ServerConfig` whose client
/// verifier asks for (and checks) them. The first certificate is the
/// client's own, the rest the intermediates it sent; they are DER, for a
/// crate such as `x509-parser` to read the subject from. Over HTTP/2 every
/// stream of the connection carries them; with
/// [`Builder::read_request_body`] they are in the `Request<Bytes>`'s
/// extensions too.
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, PeerCertificates, ResponseData};
///
/// async fn handler(req: Request<Connection>) -> Response<ResponseData> {
///     match req.extensions().get::<PeerCertificates>() {
///         Some(chain) => {
///             let der: &[u8] = chain[0].as_ref();
///             Response::new(ResponseData::from(format!("a {}-byte certificate", der.len())))
///         }
///         None => Response::builder()
///             .status(401)
///             .body(ResponseData::from("no client certificate"))
///             .unwrap(),
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificates(Arc<[CertificateDer<'static>]>);

impl std::ops::Deref for PeerCertificates {
    type Target = [CertificateDer<'static>];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The `ring` provider, made once: TLS 1.3 and 1.2 suites, X25519 and the
/// NIST curves. Chosen explicitly rather than through rustls' process-wide
/// default, so that another crate's choice of provider cannot change ours.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// A rustls server configuration from PEM files, with every way the files
/// can be wrong turned into a [`CertificateError`].
fn server_config(
    certfile: &Path,
    keyfile: &Path,
    http2: bool,
) -> Result<ServerConfig, CertificateError> {
    // mist's checks first: which of the two files is missing.
    match (certfile.is_file(), keyfile.is_file()) {
        (false, false) => {
            return Err(CertificateError::NoKeyOrCertificate {
                certfile: certfile.to_path_buf(),
                keyfile: keyfile.to_path_buf(),
            })
        }
        (false, true) => {
            return Err(CertificateError::NoCertificate {
                path: certfile.to_path_buf(),
            })
        }
        (true, false) => {
            return Err(CertificateError::NoKey {
                path: keyfile.to_path_buf(),
            })
        }
        (true, true) => {}
    }
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertificateError::Unreadable {
            path: path.to_path_buf(),
            source,
        })
    };
    let chain = certificate_chain(&read(certfile)?).map_err(|reason| {
        CertificateError::InvalidCertificate {
            path: certfile.to_path_buf(),
            reason,
        }
    })?;
    let key = private_key(&read(keyfile)?).map_err(|reason| CertificateError::InvalidKey {
        path: keyfile.to_path_buf(),
        reason,
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| CertificateError::InvalidKey {
            path: keyfile.to_path_buf(),
            reason: err.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| match err {
            rustls::Error::InconsistentKeys(_) => CertificateError::KeyMismatch {
                certfile: certfile.to_path_buf(),
                keyfile: keyfile.to_path_buf(),
            },
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                CertificateError::InvalidCertificate {
                    path: certfile.to_path_buf(),
                    reason: err.to_string(),
                }
            }
            // The key could not be loaded: not RSA, ECDSA or Ed25519, or
            // its DER is malformed.
            other => CertificateError::InvalidKey {
                path: keyfile.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
    Ok(adapt(config, http2))
}

/// Every `CERTIFICATE` block of a PEM file, in order.
fn certificate_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(err, "CERTIFICATE"))?;
    if chain.is_empty() {
        return Err("no `-----BEGIN CERTIFICATE-----` block found".to_string());
    }
    Ok(chain)
}

/// The first private key of a PEM file: PKCS#8, PKCS#1 or SEC1.
fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound)
            if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") =>
        {
            Err("the key is encrypted; decrypt it first (`openssl pkey -in KEY -out PLAIN`)".into())
        }
        Err(pem::Error::NoItemsFound) => Err("no `PRIVATE KEY`, `RSA PRIVATE KEY` or \
                                              `EC PRIVATE KEY` block found"
            .into()),
        Err(err) => Err(pem_error(err, "private key")),
    }
}

fn pem_error(err: pem::Error, what: &str) -> String {
    format!("malformed PEM {what} block: {err}")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Serves one accepted connection (TCP or Unix) over TLS: the handshake (bounded by
/// the handshake timeout, abandoned if the server shuts down), then the
/// HTTP/1.1 engine on the encrypted stream. A failed handshake costs only
/// this connection and is logged at debug level: scanners, plain HTTP sent
/// to the TLS port and clients that give up are routine.
pub(crate) async fn serve<S: Socket, H: Handler<Connection>>(
    stream: S,
    certificates: &Certificates,
    handler: Arc<H>,
    mut ctx: ConnContext,
) {
    let deadline = deadline_after(ctx.config.tls_handshake_timeout);
    let handshake = tokio::time::timeout_at(deadline, certificates.acceptor().accept(stream));
    let stream = tokio::select! {
        biased;
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                debug!(peer = ?ctx.peer, %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(peer = ?ctx.peer, "TLS handshake timed out");
                return;
            }
        },
        () = ctx.shutdown.stopped() => return,
    };
    if let Some(chain) = stream.get_ref().1.peer_certificates() {
        let chain = chain.iter().map(|cert| cert.clone().into_owned()).collect();
        ctx.identity.set_certificates(PeerCertificates(chain));
    }
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        // Boxed: the HTTP/2 engine's state stays out of this future.
        return Box::pin(crate::http2::serve(stream, BytesMut::new(), handler, ctx)).await;
    }
    dispatch::serve(stream, handler, ctx).await;
}

impl<S: Socket> Socket for TlsStream<S> {
    /// Never: the kernel cannot encrypt, so files go through user space.
    fn as_plain(&self) -> Option<&dyn Plain> {
        None
    }

    /// The socket underneath resets (TCP's close sends RST), without a
    /// close_notify.
    fn reset_on_close(&self) -> bool {
        self.get_ref().0.reset_on_close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration of the caller's gets mist's ALPN and no 0-RTT,
    /// whatever it said.
    #[test]
    fn a_callers_configuration_gets_mists_alpn_and_no_early_data() {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCertificate));
        config.alpn_protocols = vec![b"h2".to_vec(), b"spdy/3".to_vec()];
        config.max_early_data_size = 16384;
        let plain = adapt(config.clone(), false);
        assert_eq!(plain.alpn_protocols, [&b"http/1.1"[..], b"http/1.0"]);
        assert_eq!(plain.max_early_data_size, 0);
        let with_h2 = adapt(config, true);
        assert_eq!(
            with_h2.alpn_protocols,
            [&b"h2"[..], b"http/1.1", b"http/1.0"]
        );
        assert_eq!(with_h2.max_early_data_size, 0);
    }

    /// A resolver without a certificate: enough to build a configuration.
    #[derive(Debug)]
    struct NoCertificate;

    impl rustls::server::ResolvesServerCert for NoCertificate {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }

    #[test]
    fn pem_without_a_certificate_is_refused_with_a_reason() {
        let err = certificate_chain(b"hello\n").unwrap_err();
        assert!(err.contains("BEGIN CERTIFICATE"), "{err}");
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(certificate_chain(broken).unwrap_err().contains("malformed"));
    }

    #[test]
    fn pem_without_a_key_is_refused_and_encrypted_keys_are_named() {
        assert!(private_key(b"").unwrap_err().contains("PRIVATE KEY"));
        let encrypted =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(private_key(encrypted).unwrap_err().contains("encrypted"));
    }

    #[test]
    fn each_pem_key_kind_is_recognised() {
        for (label, kind) in [
            ("PRIVATE KEY", "pkcs8"),
            ("RSA PRIVATE KEY", "pkcs1"),
            ("EC PRIVATE KEY", "sec1"),
        ] {
            let pem = format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
            let key = private_key(pem.as_bytes()).unwrap();
            let found = match key {
                PrivateKeyDer::Pkcs8(_) => "pkcs8",
                PrivateKeyDer::Pkcs1(_) => "pkcs1",
                PrivateKeyDer::Sec1(_) => "sec1",
                _ => "other",
            };
            assert_eq!(found, kind);
        }
    }
}
