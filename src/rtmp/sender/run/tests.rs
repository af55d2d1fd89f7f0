//! The loop's own plumbing on paused time; the scenarios against an in-memory ingest are in
//! `tests/sender.rs`.

use super::*;
use crate::ring::RingConfig;
use crate::rtmp::transport::{ConnectFuture, ConnectOptions};

const MS: Duration = Duration::from_millis(1);

/// Refuses every connection, like a port nobody listens on.
struct Refusing;

impl Connector for Refusing {
    fn connect<'a>(&'a self, url: &'a RtmpUrl, _: &'a ConnectOptions) -> ConnectFuture<'a> {
        let addr = format!("{}:{}", url.host(), url.port());
        Box::pin(async move { Err(RtmpError::Refused { addr }) })
    }
}

#[test]
fn the_tick_is_fresher_than_the_controller_reads() {
    assert_eq!(tick_period(Duration::from_secs(10)), 50 * MS);
    assert_eq!(tick_period(Duration::from_secs(2)), 50 * MS);
    assert_eq!(tick_period(Duration::from_millis(300)), 30 * MS);
}

#[tokio::test]
async fn control_reports_state_and_reconnect_requests() {
    let control = SenderControl::new();
    assert_eq!(control.state(), SenderState::Starting);
    let mut requests = control.shared.reconnect.subscribe();
    control.reconnect_now();
    requests.changed().await.unwrap();
    let mut states = control.subscribe();
    control.set_state(SenderState::Connecting { attempt: 1 });
    states.changed().await.unwrap();
    assert_eq!(*states.borrow(), SenderState::Connecting { attempt: 1 });
}

/// Without a connection, a shutdown returns at once, and a fixed URL is its own source.
#[tokio::test(start_paused = true)]
async fn shutdown_while_waiting_returns_at_once() {
    let url = RtmpUrl::parse("rtmp://127.0.0.1:1/live/key").unwrap();
    let mut parts = SenderParts::new(Ring::new(RingConfig::default()), Arc::new(url));
    parts.connector = Arc::new(Refusing);
    let control = parts.control.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_sender(parts, async move {
        let _ = rx.await;
    }));
    let mut states = control.subscribe();
    states
        .wait_for(|s| matches!(s, SenderState::Waiting { .. }))
        .await
        .unwrap();
    let started = Instant::now();
    tx.send(()).unwrap();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO, "no timer ran");
    assert!(stats.connect_failures >= 1);
    assert_eq!(stats.sessions, 0);
    let (_, reason) = control.last_error().expect("the refusal is kept");
    assert!(reason.contains("refused"), "{reason}");
    assert_eq!(control.state(), SenderState::Stopped);
}
