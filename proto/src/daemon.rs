//! What every Archipel daemon (satellite, storage node, gateway) does the same
//! way: log setup and the shutdown signal. It lives in the bottom crate only
//! because the daemons must not depend on each other.

/// How a daemon writes its log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text for a person reading a terminal or the journal.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs to stderr in human form; see [`init_logging_as`].
pub fn init_logging() {
    init_logging_as(LogFormat::Human);
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`). Spans
/// the filter lets through (the stages of a request, at debug level) are
/// logged when they close, with how long they took. Does nothing if a logger
/// is already installed.
pub fn init_logging_as(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Completes at the first Ctrl-C (SIGINT) or SIGTERM. The handlers are
/// installed when this is called, not when the future is first polled, so a
/// signal that arrives while a daemon is still starting stops it cleanly
/// instead of killing it. Must be called within a Tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
