//! The listeners' connections: TLS and mTLS (rustls, ring provider) with
//! certificate reload without restart, and the connection limits
//! (`[limits]`): a connection cap, a handshake timeout, an idle timeout, and
//! a back-off when the accept loop runs out of file descriptors.
//!
//! [`incoming`] turns a `TcpListener` into a stream of [`Conn`]s for tonic
//! (`serve_with_incoming_shutdown`); [`HttpListener`] does the same for the
//! axum metrics server. Each [`Conn`] carries its [`PeerInfo`] (address and,
//! under mTLS, the client certificate's identity), which the auth layer reads
//! from the request extensions.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::auth::SecurityMetrics;
use crate::clock::Clock;
use crate::config::{LimitsConfig, TlsConfig};

/// Errors loading certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("tls.{field} {path}: {message}")]
    File {
        /// `cert`, `key` or `client_ca`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("tls: {0}")]
    Rustls(String),
}

/// The identity of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The name used in audit lines: the subject CN, else the first SAN,
    /// else `certificate`.
    pub subject: String,
    /// Subject common name.
    pub common_name: Option<String>,
    /// DNS and URI subject alternative names.
    pub sans: Vec<String>,
}

impl PeerIdentity {
    /// From a DER certificate.
    pub fn from_der(der: &[u8]) -> PeerIdentity {
        let (common_name, sans) = der::names(der).unwrap_or_default();
        let subject = common_name
            .clone()
            .or_else(|| sans.first().cloned())
            .unwrap_or_else(|| "certificate".to_string());
        PeerIdentity {
            subject,
            common_name,
            sans,
        }
    }

    /// Every name `[[auth.identities]].subject` may match.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.common_name
            .iter()
            .map(String::as_str)
            .chain(self.sans.iter().map(String::as_str))
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Remote address.
    pub remote: Option<SocketAddr>,
    /// The client certificate's identity (mTLS only).
    pub identity: Option<PeerIdentity>,
}

/// A minimal DER walk: the subject CN and the DNS/URI SANs of an X.509
/// certificate. Returns `None` on anything unexpected (the certificate was
/// already verified by rustls; this only extracts names).
mod der {
    fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = buf.split_first()?;
        let (&len0, mut rest) = rest.split_first()?;
        let len = if len0 < 0x80 {
            usize::from(len0)
        } else {
            let n = usize::from(len0 & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let mut l = 0usize;
            for &b in &rest[..n] {
                l = (l << 8) | usize::from(b);
            }
            rest = &rest[n..];
            l
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const SAN: &[u8] = &[0x55, 0x1d, 0x11];

    pub(super) fn names(cert: &[u8]) -> Option<(Option<String>, Vec<String>)> {
        let (_, cert, _) = tlv(cert)?;
        let (_, tbs, _) = tlv(cert)?;
        let mut rest = tbs;
        let mut fields = Vec::new();
        while !rest.is_empty() {
            let (tag, content, r) = tlv(rest)?;
            fields.push((tag, content));
            rest = r;
        }
        // [0] version is optional; then serial, signature, issuer, validity, subject.
        let skip = usize::from(fields.first()?.0 == 0xa0);
        let subject = fields.get(skip + 4)?.1;
        let mut cn = None;
        let mut sets = subject;
        while !sets.is_empty() {
            let (_, set, r) = tlv(sets)?;
            sets = r;
            let (_, atv, _) = tlv(set)?;
            let (_, oid, value) = tlv(atv)?;
            if oid == CN {
                let (_, v, _) = tlv(value)?;
                cn = Some(String::from_utf8_lossy(v).into_owned());
            }
        }
        let mut sans = Vec::new();
        if let Some((_, ext)) = fields.iter().find(|(t, _)| *t == 0xa3) {
            let (_, mut exts, _) = tlv(ext)?;
            while !exts.is_empty() {
                let (_, e, r) = tlv(exts)?;
                exts = r;
                let (_, oid, mut body) = tlv(e)?;
                if oid != SAN {
                    continue;
                }
                let (tag, _, after) = tlv(body)?;
                if tag == 0x01 {
                    body = after; // the optional `critical` flag
                }
                let (_, octets, _) = tlv(body)?;
                let (_, mut names, _) = tlv(octets)?;
                while !names.is_empty() {
                    let (tag, v, r) = tlv(names)?;
                    names = r;
                    if tag == 0x82 || tag == 0x86 {
                        sans.push(String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
        }
        Some((cn, sans))
    }
}

fn read_file(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        field,
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            field,
            path: path.to_path_buf(),
            message: format!("not a PEM certificate list: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            field,
            path: path.to_path_buf(),
            message: "holds no PEM CERTIFICATE".into(),
        });
    }
    Ok(certs)
}

/// Which application protocol a listener speaks (ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC: HTTP/2 only.
    H2,
    /// The metrics listener: HTTP/1.1.
    Http1,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Build the rustls server configurations (gRPC, HTTP) from the files.
fn build(cfg: &TlsConfig) -> Result<[Arc<rustls::ServerConfig>; 2], TlsError> {
    let chain = certs("cert", &cfg.cert)?;
    let key_pem = read_file("key", &cfg.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
        field: "key",
        path: cfg.key.clone(),
        message: format!("no PEM private key: {e}"),
    })?;
    let verifier = match &cfg.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("client_ca", ca)? {
                roots.add(c).map_err(|e| TlsError::File {
                    field: "client_ca",
                    path: ca.clone(),
                    message: e.to_string(),
                })?;
            }
            Some(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?,
            )
        }
        None => None,
    };
    let make = |alpn: Alpn| -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let b = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let b = match &verifier {
            Some(v) => b.with_client_cert_verifier(v.clone()),
            None => b.with_no_client_auth(),
        };
        let mut c = b
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Rustls(format!("cert/key: {e}")))?;
        c.alpn_protocols = match alpn {
            Alpn::H2 => vec![b"h2".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
        };
        Ok(Arc::new(c))
    };
    Ok([make(Alpn::H2)?, make(Alpn::Http1)?])
}

fn mtimes(cfg: &TlsConfig) -> Vec<Option<SystemTime>> {
    [Some(&cfg.cert), Some(&cfg.key), cfg.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// The two server configurations (gRPC, HTTP) and the files' modification
/// times they were loaded at.
type Loaded = ([Arc<rustls::ServerConfig>; 2], Vec<Option<SystemTime>>);

/// The current TLS configuration, reloaded from its files when they change.
#[derive(Debug)]
pub struct ReloadingTls {
    cfg: TlsConfig,
    current: RwLock<Loaded>,
    metrics: SecurityMetrics,
}

impl ReloadingTls {
    /// Load the files (an error names the file).
    pub fn load(cfg: &TlsConfig, metrics: SecurityMetrics) -> Result<Self, TlsError> {
        let stamp = mtimes(cfg);
        let configs = build(cfg)?;
        Ok(ReloadingTls {
            cfg: cfg.clone(),
            current: RwLock::new((configs, stamp)),
            metrics,
        })
    }

    /// Whether client certificates are required.
    pub fn mtls(&self) -> bool {
        self.cfg.client_ca.is_some()
    }

    fn acceptor(&self, alpn: Alpn) -> tokio_rustls::TlsAcceptor {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        let i = usize::from(alpn == Alpn::Http1);
        tokio_rustls::TlsAcceptor::from(guard.0[i].clone())
    }

    /// Reload when a file's modification time changed. `Ok(true)`: new
    /// handshakes now use the new files; on error the old ones stay.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = mtimes(&self.cfg);
        {
            let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
            if guard.1 == stamp {
                return Ok(false);
            }
        }
        match build(&self.cfg) {
            Ok(configs) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (configs, stamp);
                self.metrics.reload(true);
                tracing::info!(cert = %self.cfg.cert.display(), "TLS certificates reloaded");
                Ok(true)
            }
            Err(e) => {
                // Remember the stamp so a broken file is reported once per change.
                self.current.write().unwrap_or_else(|e| e.into_inner()).1 = stamp;
                self.metrics.reload(false);
                Err(e)
            }
        }
    }

    /// Check the files every `tls.reload_check_seconds` on `clock` until `stop`.
    pub async fn reload_loop(self: Arc<Self>, clock: Clock, mut stop: watch::Receiver<bool>) {
        let period = Duration::from_secs_f64(self.cfg.reload_check_seconds);
        let mut next = clock.elapsed() + period;
        loop {
            tokio::select! {
                _ = clock.sleep_until(next) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            next = clock.elapsed() + period;
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.reload_if_changed()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "TLS reload failed; keeping the previous certificates")
                }
                Err(e) => tracing::error!(error = %e, "TLS reload panicked"),
            }
        }
    }
}

/// How [`incoming`] treats the connections of one listener.
#[derive(Debug, Clone)]
pub struct AcceptOptions {
    /// `grpc`, `admin` or `http` (the `listener` label of the metrics).
    pub name: &'static str,
    /// TLS, if configured.
    pub tls: Option<Arc<ReloadingTls>>,
    /// The protocol (ALPN, and whether a plaintext preface is awaited).
    pub alpn: Alpn,
    /// Connection limits.
    pub limits: LimitsConfig,
    /// Counters.
    pub metrics: SecurityMetrics,
}

/// The HTTP/2 client preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// One accepted connection (plaintext or TLS), holding its slot of the
/// connection limit and closing itself when idle.
pub struct Conn {
    io: Io,
    /// Bytes read during the handshake phase, replayed first.
    prefix: Vec<u8>,
    peer: PeerInfo,
    idle: Duration,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    last_read: tokio::time::Instant,
    guard: ConnGuard,
}

struct ConnGuard {
    _permit: OwnedSemaphorePermit,
    metrics: SecurityMetrics,
    name: &'static str,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.metrics.connection(self.name, -1);
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("peer", &self.peer).finish()
    }
}

impl Conn {
    /// Who is connected.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        match r {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    // Cheaper than re-arming the timer on every read: the
                    // timer is moved forward only when it fires.
                    this.last_read = crate::clock::transport_now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => loop {
                if this.idle_timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = this.last_read + this.idle;
                if due > crate::clock::transport_now() {
                    this.idle_timer.as_mut().reset(due);
                    continue;
                }
                this.guard.metrics.refused(this.guard.name, "idle_timeout");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "idle timeout: nothing read from the peer",
                )));
            },
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

/// Whether an accept error means the process ran out of descriptors or
/// memory (the loop must back off, not spin).
fn resource_exhausted(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// A PEM file of the configuration: the field that names it, and its path.
pub type PemFile<'a> = (&'a str, &'a Path);

/// Client TLS to a peer (etcd, an ORCA backend): trust the CA in `ca`,
/// present the certificate and key in `identity` when given (mutual TLS),
/// verify `server_name` when given (else the URI's host). A file that
/// cannot be read is an error naming its field and path.
pub fn client_tls(
    ca: PemFile<'_>,
    identity: Option<(PemFile<'_>, PemFile<'_>)>,
    server_name: Option<&str>,
) -> Result<tonic::transport::ClientTlsConfig, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |(field, p): PemFile<'_>| {
        std::fs::read(p).map_err(|e| format!("cannot read {field} {}: {e}", p.display()))
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(n) = server_name {
        tls = tls.domain_name(n);
    }
    Ok(tls)
}

/// Accept connections from `listener` until `stop`: each one takes a slot of
/// `limits.max_connections` (none free: closed at once), must finish its TLS
/// handshake (or send the HTTP/2 preface) within the handshake timeout, and
/// is closed when idle. Out of file descriptors, the loop sleeps 10 ms,
/// doubling to 1 s, instead of spinning.
pub fn incoming(
    listener: TcpListener,
    opts: AcceptOptions,
    mut stop: watch::Receiver<bool>,
) -> mpsc::Receiver<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(opts.limits.max_connections));
    let handshake = Duration::from_secs_f64(opts.limits.handshake_timeout_seconds);
    let idle = Duration::from_secs_f64(opts.limits.idle_timeout_seconds);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            let (mut stream, remote) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(10);
                    a
                }
                Err(e) if resource_exhausted(&e) => {
                    opts.metrics.accept_error(opts.name, "fd_exhausted");
                    tracing::warn!(listener = opts.name, error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed: out of file descriptors; backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
                Err(e) => {
                    // Per-connection errors (ECONNABORTED, …): go on.
                    opts.metrics.accept_error(opts.name, "other");
                    tracing::debug!(listener = opts.name, error = %e, "accept failed");
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                opts.metrics.refused(opts.name, "max_connections");
                opts.metrics.limit_hit("max_connections");
                tracing::debug!(listener = opts.name, %remote, "connection limit reached; closing");
                tokio::spawn(async move {
                    let _ = stream.shutdown().await;
                });
                continue;
            };
            let _ = stream.set_nodelay(true);
            opts.metrics.connection(opts.name, 1);
            let guard = ConnGuard {
                _permit: permit,
                metrics: opts.metrics.clone(),
                name: opts.name,
            };
            let tx = tx.clone();
            let opts = opts.clone();
            tokio::spawn(async move {
                // A failed handshake hands the socket back, so that it too is
                // closed only after the refusal is counted.
                let setup = async {
                    match &opts.tls {
                        Some(tls) => {
                            let s = tls
                                .acceptor(opts.alpn)
                                .accept(stream)
                                .into_fallible()
                                .await
                                .map_err(|(e, s)| (e, Some(s)))?;
                            let identity = s
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| PeerIdentity::from_der(c.as_ref()));
                            Ok::<_, (io::Error, Option<TcpStream>)>((
                                Io::Tls(Box::new(s)),
                                Vec::new(),
                                identity,
                            ))
                        }
                        None if opts.alpn == Alpn::H2 => {
                            use tokio::io::AsyncReadExt;
                            let mut prefix = vec![0u8; H2_PREFACE.len()];
                            if let Err(e) = stream.read_exact(&mut prefix).await {
                                return Err((e, Some(stream)));
                            }
                            Ok((Io::Plain(stream), prefix, None))
                        }
                        None => Ok((Io::Plain(stream), Vec::new(), None)),
                    }
                };
                // Pinned here, not consumed by `.await`: on a timeout the
                // unfinished handshake (and with it the socket) lives until
                // the refusal is counted, so a peer that sees the close also
                // sees it in /metrics.
                let timed = tokio::time::timeout(handshake, setup);
                tokio::pin!(timed);
                let (io, prefix, identity) = match timed.as_mut().await {
                    Ok(Ok(x)) => x,
                    Ok(Err((e, socket))) => {
                        opts.metrics.refused(opts.name, "handshake_failed");
                        tracing::debug!(listener = opts.name, %remote, error = %e, "handshake failed");
                        drop(socket);
                        return;
                    }
                    Err(_) => {
                        opts.metrics.refused(opts.name, "handshake_timeout");
                        tracing::debug!(listener = opts.name, %remote, "handshake timed out");
                        return;
                    }
                };
                let conn = Conn {
                    io,
                    prefix,
                    peer: PeerInfo {
                        remote: Some(remote),
                        identity,
                    },
                    idle,
                    idle_timer: Box::pin(tokio::time::sleep(idle)),
                    last_read: crate::clock::transport_now(),
                    guard,
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    rx
}

/// [`incoming`] as an axum listener (the metrics server).
#[derive(Debug)]
pub struct HttpListener {
    rx: mpsc::Receiver<Result<Conn, io::Error>>,
    local: SocketAddr,
}

impl HttpListener {
    /// Accept on `listener` with `opts` until `stop`.
    pub fn new(
        listener: TcpListener,
        opts: AcceptOptions,
        stop: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(HttpListener {
            rx: incoming(listener, opts, stop),
            local,
        })
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Conn;
    type Addr = PeerInfo;
    async fn accept(&mut self) -> (Conn, PeerInfo) {
        loop {
            match self.rx.recv().await {
                Some(Ok(c)) => {
                    let p = c.peer.clone();
                    return (c, p);
                }
                Some(Err(_)) => continue,
                // The accept task stopped (shutdown): never resolve again;
                // axum's graceful shutdown ends the server.
                None => std::future::pending::<()>().await,
            }
        }
    }
    fn local_addr(&self) -> io::Result<PeerInfo> {
        Ok(PeerInfo {
            remote: Some(self.local),
            identity: None,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>>
    for PeerInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> Self {
        stream.remote_addr().clone()
    }
}
