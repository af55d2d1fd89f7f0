//! The daemon's side tasks: the status server, the viewer poller and channel renames. Each
//! is best effort: none of them stops or delays a broadcast.

use std::time::Duration;

use crate::config::Config;
use crate::schedule::Window;
use crate::status::StatusHub;

/// The running status server and how to stop it.
pub(super) struct StatusServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Starts the status server `cfg` asks for (`None` when disabled).
pub(super) async fn start_status_server(
    cfg: &Config,
    config_path: &std::path::Path,
    hub: &StatusHub,
) -> Result<Option<StatusServer>, String> {
    if !cfg.status.enabled {
        return Ok(None);
    }
    let token = cfg.status_token(config_path).map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, task) = crate::status::serve(&cfg.status, hub.clone(), token, async move {
        let _ = stopped.await;
    })
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(%addr, "status server: the page at /, /metrics /healthz /status /meter /snapshot.jpg, POST /reconnect");
    Ok(Some(StatusServer { stop, task }))
}

/// Polls listUsers for the viewer count while live (at most every 10 s), when the channel
/// can be reached.
pub(super) fn spawn_viewer_poller(
    cfg: &Config,
    hub: &StatusHub,
) -> Option<tokio::task::JoinHandle<()>> {
    if cfg.polyv.channel_id.is_empty() {
        return None;
    }
    match crate::platform::PolyvClient::from_config(&cfg.polyv) {
        Ok(client) => Some(crate::status::spawn_viewer_poller(
            client,
            hub.clone(),
            Duration::from_secs(10),
        )),
        Err(e) => {
            tracing::debug!(error = %e, "no viewer count: the Polyv client is not configured");
            None
        }
    }
}

/// Renames the channel for a window that asks for it (best effort, in the background).
pub(super) fn rename_for(cfg: &Config, w: &Window) {
    let Some(name) = w.rename.clone() else { return };
    let client = match crate::platform::PolyvClient::from_config(&cfg.polyv) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot rename the channel for this window");
            return;
        }
    };
    tokio::spawn(async move {
        match client.rename_channel(&name).await {
            Ok(()) => tracing::info!(name = %name, "channel renamed for this window"),
            Err(e) => tracing::warn!(error = %e, "channel rename failed; broadcasting anyway"),
        }
    });
}
