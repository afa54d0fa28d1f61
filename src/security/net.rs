//! Transports: the HTTP accept loop (plain or TLS, header-read and body timeouts, bounded request
//! heads, the peer's address and certificate identity attached to every request) and the TLS
//! acceptor shared with MLLP, reloadable from its files (SIGHUP).

use super::PeerInfo;
use super::config::{LimitsConfig, TlsConfig};
use axum::Router;
use axum::body::Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use openssl::nid::Nid;
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509Name;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;
use tower::ServiceExt;

/// TLS 1.3 suites offered; the SM suite (RFC 8998) only when the OpenSSL build has it (Tongsuo).
const TLS13_SUITES: &str =
    "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";
const TLS13_SM_SUITE: &str = "TLS_SM4_GCM_SM3";

/// The TLS acceptor in force; replaced as a whole on reload, so a handshake never sees a
/// certificate from one file and a key from another.
pub struct Tls {
    config: TlsConfig,
    current: RwLock<Arc<SslAcceptor>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.config.cert)
            .finish()
    }
}

fn build(cfg: &TlsConfig) -> Result<SslAcceptor, String> {
    let e = |what: &str, err: openssl::error::ErrorStack| format!("TLS {what}: {err}");
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|x| e("context", x))?;
    b.set_private_key_file(&cfg.key, SslFiletype::PEM)
        .map_err(|x| e(&format!("key {}", cfg.key.display()), x))?;
    b.set_certificate_chain_file(&cfg.cert)
        .map_err(|x| e(&format!("certificate {}", cfg.cert.display()), x))?;
    b.check_private_key()
        .map_err(|x| e("key does not match the certificate", x))?;
    let min = match cfg.min_version.as_str() {
        "1.3" => SslVersion::TLS1_3,
        "1.2" => SslVersion::TLS1_2,
        v => return Err(format!("[tls] min-version '{v}' must be 1.2 or 1.3")),
    };
    b.set_min_proto_version(Some(min))
        .map_err(|x| e("min-version", x))?;
    if let Some(c) = &cfg.ciphers {
        b.set_cipher_list(c).map_err(|x| e("ciphers", x))?;
    }
    // Offer the SM suite when this OpenSSL knows it; Debian's 3.0 does not (see README).
    let with_sm = format!("{TLS13_SUITES}:{TLS13_SM_SUITE}");
    if b.set_ciphersuites(&with_sm).is_err() {
        b.set_ciphersuites(TLS13_SUITES)
            .map_err(|x| e("TLS 1.3 suites", x))?;
    }
    if let Some(ca) = &cfg.client_ca {
        b.set_ca_file(ca)
            .map_err(|x| e(&format!("client-ca {}", ca.display()), x))?;
        let names = X509Name::load_client_ca_file(ca)
            .map_err(|x| e(&format!("client-ca {}", ca.display()), x))?;
        b.set_client_ca_list(names);
        let mut mode = SslVerifyMode::PEER;
        if cfg.require_client_cert {
            mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
        }
        b.set_verify(mode);
    }
    Ok(b.build())
}

impl Tls {
    /// Loads certificate and key (and client CA) from the files.
    pub fn load(cfg: &TlsConfig) -> Result<Tls, String> {
        Ok(Tls {
            current: RwLock::new(Arc::new(build(cfg)?)),
            config: cfg.clone(),
        })
    }

    /// Re-reads the files; on failure the acceptor in force stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = Arc::new(build(&self.config)?);
        if let Ok(mut c) = self.current.write() {
            *c = fresh;
        }
        Ok(())
    }

    /// Whether MLLP is served over TLS too.
    pub fn for_mllp(&self) -> bool {
        self.config.mllp
    }

    fn acceptor(&self) -> Arc<SslAcceptor> {
        self.current
            .read()
            .map(|a| a.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Runs the server handshake; returns the stream and the client certificate's CN.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<(SslStream<TcpStream>, Option<String>), String> {
        let acceptor = self.acceptor();
        let ssl = Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
        let mut s = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        Pin::new(&mut s).accept().await.map_err(|e| e.to_string())?;
        let cn = s.ssl().peer_certificate().and_then(|c| {
            c.subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .next()
                .and_then(|e| e.data().to_string().ok())
        });
        Ok((s, cn))
    }
}

/// Serves the router on `listener` until `stop` changes; then stops accepting and waits for the
/// connections in flight to finish their current request.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<Tls>>,
    limits: LimitsConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limits = Arc::new(limits);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, addr)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let (app, tls, limits) = (app.clone(), tls.clone(), limits.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let header_timeout = Duration::from_secs(limits.header_read_timeout_secs.max(1));
                    match tls {
                        Some(tls) => {
                            // The handshake is bounded like the headers (a slow handshake is slowloris too).
                            match tokio::time::timeout(header_timeout, tls.accept(tcp)).await {
                                Ok(Ok((s, cn))) => {
                                    let peer = PeerInfo { addr, cert_cn: cn };
                                    connection(s, peer, app, &limits, watcher).await;
                                }
                                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                            }
                        }
                        None => {
                            let peer = PeerInfo { addr, cert_cn: None };
                            connection(tcp, peer, app, &limits, watcher).await;
                        }
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn connection<I>(
    io: I,
    peer: PeerInfo,
    app: Router,
    limits: &LimitsConfig,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = Duration::from_secs(limits.body_read_timeout_secs.max(1));
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req =
            req.map(|b| Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, b)));
        req.extensions_mut().insert(peer.clone());
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs.max(1)))
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
