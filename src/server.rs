//! Starting and stopping the gateway: store, HTTP listener, graceful shutdown.

use crate::config::Settings;
use crate::rest::{AppState, router};
use crate::store::{CachedStore, SqliteStore, Store, StoreError, sqlite::SqliteOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A gateway that is up and listening.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound MLLP address, when the listener is on.
    pub mllp_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
    /// The TLS acceptor (HTTPS and MLLP/TLS), when `[tls]` is configured.
    tls: Option<Arc<crate::security::net::Tls>>,
}

/// Why the gateway could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
    #[error("HL7 v2: {0}")]
    Hl7v2(#[from] crate::ingest::hl7v2::pipeline::StartError),
    #[error("security: {0}")]
    Security(String),
    #[error("feeds:\n{0}")]
    Feeds(String),
    #[error("subscriptions: {0}")]
    Subscriptions(String),
}

/// Opens the embedded store under `settings.data_dir` with the read cache in front.
pub fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StoreError> {
    let opts = SqliteOptions {
        readers: settings.store_readers,
        max_batch: settings.store_max_batch,
        max_query_steps: settings.security.limits.max_search_cost,
    };
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&settings.data_dir, opts)?);
    Ok(Arc::new(CachedStore::new(sqlite, settings.cache_entries)))
}

impl RunningServer {
    /// Opens the store, binds and serves in the background.
    pub async fn start(settings: Settings) -> Result<RunningServer, ServerError> {
        let store = open_store(&settings)?;
        // Every commit is reported to the subscription matcher (see `subscription::observe`).
        let (commits_tx, commits_rx) = tokio::sync::mpsc::unbounded_channel();
        let store: Arc<dyn Store> = Arc::new(crate::subscription::observe::ObservedStore::new(
            store, commits_tx,
        ));
        let feeds = crate::ingest::feed::FeedService::start(&settings).map_err(|errs| {
            ServerError::Feeds(
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
        let listener = TcpListener::bind(settings.addr)
            .await
            .map_err(|e| ServerError::Bind(settings.addr, e))?;
        let addr = listener.local_addr().map_err(ServerError::Serve)?;
        let hl7v2 = Arc::new(crate::ingest::hl7v2::pipeline::Hl7v2Service::start(
            &settings,
        )?);
        let mllp = match settings.mllp_addr {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|e| ServerError::Bind(a, e))?,
            ),
            None => None,
        };
        let mllp_addr = match &mllp {
            Some(l) => Some(l.local_addr().map_err(ServerError::Serve)?),
            None => None,
        };
        let security = Arc::new(
            crate::security::Security::start(&settings)
                .await
                .map_err(ServerError::Security)?,
        );
        let tls = match &settings.security.tls {
            Some(t) => Some(Arc::new(
                crate::security::net::Tls::load(t).map_err(ServerError::Security)?,
            )),
            None => None,
        };
        let limits = settings.security.limits.clone();
        let mut state = AppState::new(store.clone(), settings, hl7v2);
        state.security = security.clone();
        state.feeds = Arc::new(feeds);
        let n = crate::rest::register_stored_conformance(&state).await?;
        tracing::info!(stored_conformance_resources = n, "registry ready");
        let subscriptions = Arc::new(
            crate::subscription::Subscriptions::start(state.clone(), commits_rx)
                .await
                .map_err(ServerError::Subscriptions)?,
        );
        state.subscriptions = subscriptions.clone();
        let ready = state.ready.clone();
        let (mllp_stop, mllp_stopped) = tokio::sync::watch::channel(false);
        let mllp_task = mllp.map(|listener| {
            let max = state.settings.hl7v2_max_message_bytes;
            let handler = Arc::new(crate::ingest::hl7v2::pipeline::MllpHandler::new(
                state.clone(),
            ));
            let mllp_tls = tls.clone().filter(|t| t.for_mllp());
            tokio::spawn(crate::ingest::hl7v2::mllp::serve(
                listener,
                handler,
                max,
                mllp_stopped,
                mllp_tls,
            ))
        });
        let app = router(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let (http_stop, http_stopped) = tokio::sync::watch::channel(false);
        let http_tls = tls.clone();
        let task = tokio::spawn(async move {
            tokio::spawn(async move {
                let _ = stopped.await;
                ready.store(false, Ordering::Relaxed);
                // MLLP stops taking frames; a message being processed still gets its ACK.
                let _ = mllp_stop.send(true);
                let _ = http_stop.send(true);
            });
            // In-flight requests finish before serve returns; then the writer drains its queue.
            crate::security::net::serve_http(listener, app, http_tls, limits, http_stopped).await;
            if let Some(t) = mllp_task {
                let _ = t.await;
            }
            if let Some(a) = &security.audit {
                a.flush().await;
            }
            // Matched writes are queued before the store closes; undelivered ones wait on disk.
            subscriptions.stop().await;
            store.flush().await?;
            Ok(())
        });
        #[cfg(unix)]
        if let Some(t) = &tls
            && let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            let t = t.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match t.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                        Err(e) => {
                            tracing::error!(error = %e, "SIGHUP: TLS reload failed; the previous certificate stays")
                        }
                    }
                }
            });
        }
        tracing::info!(%addr, mllp = ?mllp_addr, "huitong listening");
        Ok(RunningServer {
            addr,
            mllp_addr,
            stop: Some(stop),
            task,
            tls,
        })
    }

    /// Re-reads the TLS certificate and key (what SIGHUP does).
    pub fn reload_tls(&self) -> Result<(), String> {
        match &self.tls {
            Some(t) => t.reload(),
            None => Err("no [tls] configured".into()),
        }
    }

    /// Stops accepting, finishes in-flight requests, flushes the store.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.wait().await
    }

    /// Waits until the server stops (after [`RunningServer::shutdown`] or a failure).
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Serve(std::io::Error::other(e.to_string()))),
        }
    }

    /// Takes the stop handle, to trigger shutdown from a signal handler.
    pub fn stop_handle(&mut self) -> Option<oneshot::Sender<()>> {
        self.stop.take()
    }
}
