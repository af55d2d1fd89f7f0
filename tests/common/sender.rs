//! Running the reconnecting sender in a test: real H.264/AAC (a short FLV made once with the
//! ffmpeg CLI) pushed into the ring on tokio's clock by a producer that loops it with
//! continuing timestamps, as the encoders would; the sender's handle and counters; a stop as
//! the broadcast does it. Works on the paused clock (in-memory ingest) and the real one
//! (nginx).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use polypush::media::{AudioInfo, MediaPacket, StreamInfo};
use polypush::ring::{Ring, RingConfig};
use polypush::rtmp::{
    run_sender, AddressSource, Connector, RtmpError, RtmpUrl, SenderControl, SenderHooks,
    SenderOptions, SenderParts, SenderState, SenderStats,
};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

/// 3 s of test pattern and tone, H.264 (GOP 1 s, no B-frames) + AAC, as ring packets.
pub fn sample() -> &'static [MediaPacket] {
    static SAMPLE: OnceLock<Vec<MediaPacket>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.flv");
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=sample_rate=48000"])
            .args(["-t", "3", "-c:v", "libx264", "-g", "25", "-bf", "0"])
            .args(["-preset", "ultrafast", "-c:a", "aac", "-f", "flv"])
            .arg(&path)
            .stdin(Stdio::null())
            .status()
            .expect("run ffmpeg");
        assert!(status.success(), "ffmpeg could not encode the sample");
        read_flv(&path)
    })
}

/// FLV tags as ring packets; bodies are slices of one `Bytes`, as the pipeline's would be.
fn read_flv(path: &Path) -> Vec<MediaPacket> {
    let info = Arc::new(StreamInfo {
        width: 320,
        height: 240,
        fps: 25.0,
        video_bitrate_kbps: 300,
        audio: Some(AudioInfo {
            sample_rate: 48_000,
            channels: 1,
            bitrate_kbps: 128,
        }),
        encoder: "polypush sender test".into(),
    });
    super::nginx::read_flv(path, info)
}

/// Pushes the sample's headers now (before any session can start), then its media on
/// tokio's clock, looped, with timestamps continuing from `base_dts` (as the pipeline clock
/// would).
pub struct Producer {
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
    /// Media packets pushed so far.
    pub pushed: Arc<AtomicU64>,
}

pub fn produce(ring: &Ring, base_dts: u64) -> Producer {
    let (headers, media): (Vec<MediaPacket>, Vec<MediaPacket>) =
        sample().iter().cloned().partition(|p| p.kind.is_header());
    for mut h in headers {
        h.dts_ms = base_dts;
        ring.push(h);
    }
    let period = media.last().expect("media").dts_ms + 40;
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let (ring, flag, count) = (ring.clone(), stop.clone(), pushed.clone());
    let task = tokio::spawn(async move {
        let start = Instant::now();
        for lap in 0u64.. {
            for p in &media {
                let offset = p.dts_ms + lap * period;
                sleep_until(start + Duration::from_millis(offset)).await;
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let mut p = p.clone();
                p.dts_ms = base_dts + offset;
                ring.push(p);
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Producer { stop, task, pushed }
}

/// A sender under test.
pub struct Running {
    pub control: SenderControl,
    pub ring: Ring,
    pub producer: Producer,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: JoinHandle<Result<SenderStats, RtmpError>>,
    pub keyframe_requests: Arc<AtomicU64>,
    pub publish_hooks: Arc<AtomicU64>,
}

/// The sender's logs, shown with `RUST_LOG=polypush=debug cargo test --test … -- --nocapture`.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Starts a sender of produced media to `source` through `connector` (TCP when `None`).
pub fn start(
    source: Arc<dyn AddressSource>,
    connector: Option<Arc<dyn Connector>>,
    options: SenderOptions,
    base_dts: u64,
) -> Running {
    init_logs();
    let ring = Ring::new(RingConfig::default());
    let producer = produce(&ring, base_dts);
    let keyframe_requests = Arc::new(AtomicU64::new(0));
    let publish_hooks = Arc::new(AtomicU64::new(0));
    let mut parts = SenderParts::new(ring.clone(), source);
    if let Some(c) = connector {
        parts.connector = c;
    }
    parts.options = options;
    parts.hooks = SenderHooks {
        request_keyframe: Box::new({
            let n = keyframe_requests.clone();
            move || {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }),
        on_publishing: Box::new({
            let n = publish_hooks.clone();
            move |_url: &RtmpUrl| {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }),
    };
    let control = parts.control.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_sender(parts, async move {
        let _ = rx.await;
    }));
    Running {
        control,
        ring,
        producer,
        shutdown: Some(tx),
        task,
        keyframe_requests,
        publish_hooks,
    }
}

impl Running {
    /// Waits until the state satisfies `pred`; returns when it did.
    pub async fn wait_state(
        &self,
        what: &str,
        within: Duration,
        pred: impl FnMut(&SenderState) -> bool,
    ) -> Instant {
        let mut states = self.control.subscribe();
        let outcome = timeout(within, states.wait_for(pred))
            .await
            .map(|r| r.is_ok());
        match outcome {
            Ok(true) => Instant::now(),
            Ok(false) => panic!("the sender stopped while waiting for {what}"),
            Err(_) => panic!(
                "{what}: not within {within:?}; state: {}; last error: {:?}",
                self.control.state(),
                self.control.last_error()
            ),
        }
    }

    pub async fn wait_publishing(&self, within: Duration) -> Instant {
        self.wait_state("publishing", within, SenderState::is_publishing)
            .await
    }

    /// Waits until `cond` holds on the sender's counters, which are refreshed with every
    /// state change (no polling: it wakes on the changes).
    pub async fn wait_stats(
        &self,
        what: &str,
        within: Duration,
        mut cond: impl FnMut(&SenderStats) -> bool,
    ) -> Instant {
        let control = self.control.clone();
        self.wait_state(what, within, move |_| cond(&control.stats()))
            .await
    }

    /// Shutdown as the broadcast does it: signal, stop the encoders, close the ring, wait.
    pub async fn stop(mut self) -> SenderStats {
        let _ = self.shutdown.take().unwrap().send(());
        self.producer.stop.store(true, Ordering::Relaxed);
        let _ = (&mut self.producer.task).await;
        self.ring.close();
        timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the sender returns after shutdown")
            .expect("the sender task did not panic")
            .expect("the sender ends cleanly")
    }
}

/// Lets `d` pass on tokio's clock (on the paused clock: at once, every timer on the way firing
/// in order).
pub async fn pass(d: Duration) {
    sleep_until(Instant::now() + d).await;
}

pub fn url(s: &str) -> RtmpUrl {
    RtmpUrl::parse(s).expect("valid URL")
}
