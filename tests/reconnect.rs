//! The reconnecting sender (`polypush::rtmp::run_sender`) against real peers: nginx-rtmp
//! restarted under it, a peer that stops reading, ingests that reject the key, the Polyv
//! simulator rejecting credentials, peers that speak broken RTMP, a link cut inside a network
//! namespace, and timestamps past the 24-bit RTMP limit.
//!
//! Media is real H.264/AAC (a short FLV made once with the ffmpeg CLI), pushed into the ring in
//! real time by a producer task that loops it with continuing timestamps, as the encoders would.
//! Every wait is on a condition with a deadline; the only fixed sleeps are the scenario's own
//! durations (how long to publish, how long the ingest is down). Processes are stopped by PID.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use polypush::config::{Endpoints, PolyvConfig, Secret};
use polypush::media::{AudioInfo, MediaPacket, StreamInfo};
use polypush::platform::{PlatformError, PolyvClient};
use polypush::ring::{Ring, RingConfig};
use polypush::rtmp::{
    self, run_sender, AddressError, AddressFuture, AddressSource, ConnectOptions, RtmpError,
    RtmpUrl, SenderControl, SenderHooks, SenderOptions, SenderState, SenderStats,
};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{block_in_place, JoinHandle};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use common::nginx::{decode_errors, Nginx, NginxOptions};
use common::{flv_tags, FlvTag, Sim, CHANNEL, PASSWORD};

// ---------------------------------------------------------------------------------------------
// Media: a sample encoded once, a real-time producer

/// 3 s of test pattern and tone, H.264 (GOP 1 s, no B-frames) + AAC, as ring packets.
fn sample() -> &'static [MediaPacket] {
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
        encoder: "polypush reconnect test".into(),
    });
    common::nginx::read_flv(path, info)
}

/// Pushes the sample's headers now (before any session can start), then its media in real
/// time, looped, with timestamps continuing from `base_dts` (as the pipeline clock would).
struct Producer {
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

fn produce(ring: &Ring, base_dts: u64) -> Producer {
    let (headers, media): (Vec<MediaPacket>, Vec<MediaPacket>) =
        sample().iter().cloned().partition(|p| p.kind.is_header());
    for mut h in headers {
        h.dts_ms = base_dts;
        ring.push(h);
    }
    let period = media.last().expect("media").dts_ms + 40;
    let stop = Arc::new(AtomicBool::new(false));
    let (ring, flag) = (ring.clone(), stop.clone());
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
            }
        }
    });
    Producer { stop, task }
}

// ---------------------------------------------------------------------------------------------
// Running a sender

struct Running {
    control: SenderControl,
    ring: Ring,
    producer: Producer,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<SenderStats, RtmpError>>,
    keyframe_requests: Arc<AtomicU64>,
    publish_hooks: Arc<AtomicU64>,
}

/// The sender's logs, shown with `RUST_LOG=polypush=debug cargo test --test reconnect -- --nocapture`.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn start(source: Arc<dyn AddressSource>, opts: SenderOptions, base_dts: u64) -> Running {
    init_logs();
    let ring = Ring::new(RingConfig::default());
    let producer = produce(&ring, base_dts);
    let control = SenderControl::new();
    let keyframe_requests = Arc::new(AtomicU64::new(0));
    let publish_hooks = Arc::new(AtomicU64::new(0));
    let hooks = SenderHooks {
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
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_sender(
        ring.clone(),
        source,
        opts,
        control.clone(),
        hooks,
        async move {
            let _ = rx.await;
        },
    ));
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
    async fn wait_state(
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

    async fn wait_publishing(&self, within: Duration) -> Instant {
        self.wait_state("publishing", within, SenderState::is_publishing)
            .await
    }

    /// Shutdown as the supervisor does it: signal, stop the encoders, close the ring, wait.
    async fn stop(mut self) -> SenderStats {
        let _ = self.shutdown.take().unwrap().send(());
        self.producer.stop.store(true, Ordering::Relaxed);
        let _ = self.producer.task.await;
        self.ring.close();
        timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the sender returns after shutdown")
            .expect("the sender task did not panic")
            .expect("the sender ends cleanly")
    }
}

/// Polls `cond` every 10 ms until it holds; returns when it did.
async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        sleep(Duration::from_millis(10)).await;
    }
}

fn url(s: &str) -> RtmpUrl {
    RtmpUrl::parse(s).expect("valid URL")
}

fn fast_options() -> SenderOptions {
    SenderOptions {
        connect: ConnectOptions {
            connect_timeout: Duration::from_secs(2),
            setup_timeout: Duration::from_secs(2),
            close_timeout: Duration::from_secs(2),
            ..ConnectOptions::default()
        },
        ..SenderOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Recordings

/// Checks one nginx recording: decodes cleanly, starts (after the sequence headers) with a
/// keyframe, timestamps monotonic and without gaps per track (nginx-rtmp writes them relative
/// to the recording's first frame, so a misread RTMP timestamp shows up as a jump). Returns
/// the media span in ms.
fn check_recording(path: &Path) -> u32 {
    let errors = decode_errors(path);
    assert!(
        errors.trim().is_empty(),
        "{}: decode errors: {errors}",
        path.display()
    );
    let tags = flv_tags(path);
    let media: Vec<&FlvTag> = tags.iter().filter(|t| t.is_media()).collect();
    assert!(
        media.len() > 20,
        "{}: only {} media tags",
        path.display(),
        media.len()
    );
    let first_video = media
        .iter()
        .find(|t| t.kind == 9)
        .unwrap_or_else(|| panic!("{}: no video", path.display()));
    assert!(
        first_video.is_video_keyframe(),
        "{}: the first video frame is not a keyframe",
        path.display()
    );
    for kind in [8u8, 9] {
        let ts: Vec<u32> = media
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.ts_ms)
            .collect();
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "{}: timestamps of tag type {kind} go backwards",
            path.display()
        );
        let gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        assert!(
            gap <= 250,
            "{}: a {gap} ms gap in tag type {kind}",
            path.display()
        );
    }
    media.last().unwrap().ts_ms - media[0].ts_ms
}

// ---------------------------------------------------------------------------------------------
// nginx restarted three times

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ingest_restarts_each_recover_within_1_5_s_with_clean_recordings() {
    const STREAM: &str = "restarts";
    let mut nginx = Nginx::start_with(NginxOptions {
        record_unique: true,
        ..NginxOptions::default()
    });
    let sender = start(Arc::new(url(&nginx.url(STREAM))), fast_options(), 0);
    sender.wait_publishing(Duration::from_secs(10)).await;

    let mut recoveries = Vec::new();
    for (i, outage_ms) in [1000u64, 1500, 2000].into_iter().enumerate() {
        // Publish a while (longer than `reset_after`, so each restart is a new outage).
        sleep(Duration::from_millis(3500)).await;
        block_in_place(|| nginx.stop());
        sender
            .wait_state("noticing the restart", Duration::from_secs(5), |s| {
                !s.is_publishing()
            })
            .await;
        sleep(Duration::from_millis(outage_ms)).await;
        block_in_place(|| nginx.start_again());
        let back = Instant::now();
        let published = sender.wait_publishing(Duration::from_secs(5)).await;
        let recovery = published.saturating_duration_since(back);
        eprintln!(
            "restart {}: outage {outage_ms} ms, publishing again {} ms after nginx was back",
            i + 1,
            recovery.as_millis()
        );
        recoveries.push(recovery);
        let expected = i + 2;
        let log_ok = block_in_place(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while nginx.publish_count(STREAM) < expected {
                if std::time::Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            true
        });
        assert!(log_ok, "nginx did not log publish #{expected}");
    }
    sleep(Duration::from_millis(3000)).await;
    let stats = sender.stop().await;
    eprintln!("recovery times: {recoveries:?}; {stats:?}");
    for r in &recoveries {
        assert!(*r <= Duration::from_millis(1500), "{recoveries:?}");
    }
    assert_eq!(stats.sessions, 4, "{stats:?}");
    assert_eq!(stats.reconnects, 3, "{stats:?}");
    assert_eq!(stats.connections_lost, 3, "{stats:?}");
    assert!(stats.last_recovery.is_some());
    assert!(stats.headers_skipped >= 3, "{stats:?}");

    // close() returned after nginx hung up, so every recording is complete. (nginx writes
    // timestamps relative to each recording's start, so continuity across sessions is checked
    // on the wire instead, by `a_new_session_starts_with_headers_and_a_keyframe_…`.)
    let recordings = nginx.recordings(STREAM);
    assert_eq!(recordings.len(), 4, "{recordings:?}");
    for rec in &recordings {
        let span = check_recording(rec);
        assert!(span >= 2000, "{}: {span} ms", rec.display());
    }
}

// ---------------------------------------------------------------------------------------------
// A fake ingest over rml_rtmp's server session

/// What a fake ingest received, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Metadata,
    VideoHeader(u32),
    Video { ts: u32, key: bool },
    AudioHeader(u32),
    Audio(u32),
}

/// The server end of one publisher: handshake, accepts connect and publish, records media.
struct FakeIngest {
    socket: TcpStream,
    handshake: Handshake,
    session: Option<ServerSession>,
    publishing: bool,
    got: Vec<Got>,
    buf: Vec<u8>,
}

impl FakeIngest {
    fn new(socket: TcpStream) -> Self {
        FakeIngest {
            socket,
            handshake: Handshake::new(PeerType::Server),
            session: None,
            publishing: false,
            got: Vec::new(),
            buf: vec![0; 64 * 1024],
        }
    }

    /// Reads once, handles it and answers; false at EOF or on a connection error.
    async fn step(&mut self) -> bool {
        let n = match self.socket.read(&mut self.buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let input = self.buf[..n].to_vec();
        let mut out = Vec::new();
        let rest = if self.session.is_none() {
            match self.handshake.process_bytes(&input).expect("handshake") {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    out.extend(response_bytes);
                    Vec::new()
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    out.extend(response_bytes);
                    let (session, results) =
                        ServerSession::new(ServerSessionConfig::new()).unwrap();
                    self.session = Some(session);
                    self.apply(results, &mut out);
                    remaining_bytes
                }
            }
        } else {
            input
        };
        if !rest.is_empty() {
            let results = self
                .session
                .as_mut()
                .unwrap()
                .handle_input(&rest)
                .expect("valid RTMP from polypush");
            self.apply(results, &mut out);
        }
        out.is_empty() || self.socket.write_all(&out).await.is_ok()
    }

    fn apply(&mut self, results: Vec<ServerSessionResult>, out: &mut Vec<u8>) {
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => out.extend(p.bytes),
                ServerSessionResult::RaisedEvent(e) => self.on_event(e, out),
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    fn on_event(&mut self, event: ServerSessionEvent, out: &mut Vec<u8>) {
        let session = self.session.as_mut().unwrap();
        let results = match event {
            ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                session.accept_request(request_id).unwrap()
            }
            ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                self.publishing = true;
                session.accept_request(request_id).unwrap()
            }
            ServerSessionEvent::StreamMetadataChanged { .. } => {
                self.got.push(Got::Metadata);
                Vec::new()
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                let ts = timestamp.value;
                self.got.push(if data.len() > 1 && data[1] == 0 {
                    Got::VideoHeader(ts)
                } else {
                    Got::Video {
                        ts,
                        key: data[0] >> 4 == 1,
                    }
                });
                Vec::new()
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                let ts = timestamp.value;
                self.got.push(if data.len() > 1 && data[1] == 0 {
                    Got::AudioHeader(ts)
                } else {
                    Got::Audio(ts)
                });
                Vec::new()
            }
            _ => Vec::new(),
        };
        self.apply(results, out);
    }

    /// Until `NetStream.Publish.Start` is sent.
    async fn accept_publisher(&mut self) -> bool {
        while !self.publishing {
            if !self.step().await {
                return false;
            }
        }
        true
    }
}

/// A loopback listener; `rcvbuf` sets a small receive buffer on accepted sockets.
async fn listener(rcvbuf: Option<usize>) -> (TcpListener, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(16).unwrap();
    socket.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(socket.into()).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

// ---------------------------------------------------------------------------------------------
// Continuity across a dropped connection (what the ingest receives, message by message)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_starts_with_headers_and_a_keyframe_and_timestamps_continue() {
    let (listener, addr) = listener(None).await;
    let sessions: Arc<Mutex<Vec<Vec<Got>>>> = Arc::default();
    let server = tokio::spawn({
        let sessions = sessions.clone();
        async move {
            for i in 0..2 {
                let (socket, _) = listener.accept().await.unwrap();
                let mut ingest = FakeIngest::new(socket);
                assert!(ingest.accept_publisher().await);
                loop {
                    // The first session is dropped after 2.5 s of video: the ingest "restarts".
                    let enough = i == 0
                        && ingest
                            .got
                            .iter()
                            .filter(|g| matches!(g, Got::Video { .. }))
                            .count()
                            > 62;
                    if enough || !ingest.step().await {
                        break;
                    }
                }
                sessions
                    .lock()
                    .unwrap()
                    .push(std::mem::take(&mut ingest.got));
            }
        }
    });

    let sender = start(
        Arc::new(url(&format!("rtmp://{addr}/live/continuity"))),
        fast_options(),
        0,
    );
    sender.wait_publishing(Duration::from_secs(5)).await;
    wait_until("the second session", Duration::from_secs(10), || {
        sender.control.stats().sessions == 2
    })
    .await;
    sleep(Duration::from_millis(2500)).await;
    let keyframes = sender.keyframe_requests.load(Ordering::Relaxed);
    let hooks = sender.publish_hooks.load(Ordering::Relaxed);
    let stats = sender.stop().await;
    timeout(Duration::from_secs(5), server)
        .await
        .expect("the fake ingest saw both sessions end")
        .unwrap();
    assert_eq!((keyframes, hooks), (2, 2));
    assert!(stats.headers_skipped >= 3, "{stats:?}");

    let sessions = sessions.lock().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    for (i, got) in sessions.iter().enumerate() {
        // Headers first, exactly once each: the first session does not send the start-up
        // headers twice (from `headers()` and popped from the ring).
        assert!(
            matches!(
                got[..3],
                [Got::Metadata, Got::VideoHeader(_), Got::AudioHeader(_)]
            ),
            "session {i} starts with {:?}",
            &got[..3]
        );
        let headers = got
            .iter()
            .filter(|g| matches!(g, Got::Metadata | Got::VideoHeader(_) | Got::AudioHeader(_)))
            .count();
        assert_eq!(headers, 3, "session {i}");
        let first_video = got.iter().find_map(|g| match g {
            Got::Video { key, .. } => Some(*key),
            _ => None,
        });
        assert_eq!(
            first_video,
            Some(true),
            "session {i} starts with a keyframe"
        );
        let video: Vec<u32> = got
            .iter()
            .filter_map(|g| match g {
                Got::Video { ts, .. } | Got::VideoHeader(ts) => Some(*ts),
                _ => None,
            })
            .collect();
        let audio: Vec<u32> = got
            .iter()
            .filter_map(|g| match g {
                Got::Audio(ts) | Got::AudioHeader(ts) => Some(*ts),
                _ => None,
            })
            .collect();
        assert!(
            video.windows(2).all(|w| w[0] <= w[1]),
            "session {i}: {video:?}"
        );
        assert!(
            audio.windows(2).all(|w| w[0] <= w[1]),
            "session {i}: {audio:?}"
        );
    }
    // No reset to 0: the second session's timestamps continue the first one's, per track
    // (its re-sent headers are stamped at the last timestamp sent on their track).
    let last = |got: &[Got], video: bool| {
        got.iter()
            .rev()
            .find_map(|g| match (g, video) {
                (Got::Video { ts, .. }, true) | (Got::Audio(ts), false) => Some(*ts),
                _ => None,
            })
            .unwrap()
    };
    let first_ts = |got: &[Got], video: bool| {
        got.iter()
            .find_map(|g| match (g, video) {
                (Got::VideoHeader(ts), true) | (Got::AudioHeader(ts), false) => Some(*ts),
                _ => None,
            })
            .unwrap()
    };
    for video in [true, false] {
        let (end1, start2) = (last(&sessions[0], video), first_ts(&sessions[1], video));
        assert!(start2 >= end1, "video={video}: {end1} then {start2}");
        assert!(start2 > 2000, "video={video}: {start2}");
    }
}

// ---------------------------------------------------------------------------------------------
// A peer that stops reading

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_detected_as_stalled_and_replaced() {
    const STALL: Duration = Duration::from_secs(3);
    // Every connection: accept the publish, then never read again (4 KiB receive buffer).
    let (listener, addr) = listener(Some(4096)).await;
    let accepted: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let server = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            let mut held = Vec::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                accepted.lock().unwrap().push(Instant::now());
                let mut ingest = FakeIngest::new(socket);
                if ingest.accept_publisher().await {
                    held.push(ingest);
                }
            }
        }
    });

    let sender = start(
        Arc::new(url(&format!("rtmp://{addr}/live/stall"))),
        SenderOptions {
            stall_timeout: STALL,
            ..fast_options()
        },
        0,
    );
    let published = sender.wait_publishing(Duration::from_secs(5)).await;
    let detected = wait_until("stall detection", Duration::from_secs(10), || {
        sender.control.stats().stalls >= 1
    })
    .await;
    let took = detected - published;
    eprintln!(
        "stall detected {} ms after publishing started",
        took.as_millis()
    );
    assert!(took >= STALL - Duration::from_millis(50), "{took:?}");
    assert!(took <= STALL + Duration::from_millis(1500), "{took:?}");
    let (_, reason) = sender.control.last_error().expect("the stall is reported");
    assert!(reason.contains("accepted no data for"), "{reason}");
    // Reconnection attempted: a second connection within the first backoff step (0.5 s).
    let reconnected = wait_until("a new connection", Duration::from_secs(3), || {
        accepted.lock().unwrap().len() >= 2
    })
    .await;
    assert!(reconnected - detected <= Duration::from_millis(1000));
    let stats = sender.stop().await;
    server.abort();
    assert!(stats.stalls >= 1, "{stats:?}");
    assert!(stats.sessions >= 1, "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// Rejections

/// A fixed address that records every request (when, and whether a fresh one was asked for).
struct Counting {
    url: RtmpUrl,
    calls: Mutex<Vec<(Instant, bool)>>,
}

impl AddressSource for Counting {
    fn address(&self, fresh: bool) -> AddressFuture<'_> {
        self.calls.lock().unwrap().push((Instant::now(), fresh));
        Box::pin(std::future::ready(Ok(self.url.clone())))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_publish_asks_for_a_fresh_address_and_backs_off() {
    const WINDOW: Duration = Duration::from_secs(8);
    let nginx = Nginx::start();
    let source = Arc::new(Counting {
        url: url(&nginx.url_denied("denied1")),
        calls: Mutex::new(Vec::new()),
    });
    let sender = start(source.clone(), fast_options(), 0);
    sleep(WINDOW).await;
    let still_running = !sender.task.is_finished();
    let stats = sender.stop().await;
    assert!(still_running);
    let calls = source.calls.lock().unwrap().clone();
    let gaps: Vec<u64> = calls
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_millis() as u64)
        .collect();
    eprintln!("{} attempts in {WINDOW:?}, gaps {gaps:?} ms", calls.len());
    // A fresh address after every rejection.
    assert!(!calls[0].1);
    assert!(calls[1..].iter().all(|&(_, fresh)| fresh), "{calls:?}");
    // The shutdown may interrupt the last attempt between its address and its rejection.
    let rejections = stats.publish_rejections as usize;
    assert!(
        rejections == calls.len() || rejections + 1 == calls.len(),
        "{stats:?}"
    );
    assert_eq!(stats.fresh_addresses as usize, calls.len() - 1, "{stats:?}");
    assert_eq!(stats.sessions, 0);
    // Backoff, never fast: ceilings 0.5, 1, 2, 4 s … (each gap within its ceiling plus the
    // attempt's own time), so at least 4 attempts in 8 s, and no busy loop: with ceilings that
    // double, more than 10 attempts in 8 s would take a jitter draw near zero over and over.
    for (i, gap) in gaps.iter().enumerate() {
        let ceiling = 500u64 << i.min(6);
        assert!(*gap <= ceiling.min(30_000) + 300, "gap {i}: {gaps:?}");
    }
    assert!((4..=10).contains(&calls.len()), "{gaps:?}");
    assert!(nginx.wait_for_log("notify: publish", Duration::from_secs(1)));
}

/// Addresses from the Polyv simulator's teacher_login, as the supervisor gets them.
struct PolyvSource {
    client: PolyvClient,
    cached: Mutex<Option<RtmpUrl>>,
}

impl AddressSource for PolyvSource {
    fn address(&self, fresh: bool) -> AddressFuture<'_> {
        Box::pin(async move {
            if !fresh {
                if let Some(url) = self.cached.lock().unwrap().clone() {
                    return Ok(url);
                }
            }
            match self.client.teacher_login().await {
                Ok(reply) => {
                    let url = RtmpUrl::parse(&reply.push_address().reveal())
                        .map_err(|e| AddressError::Fatal(e.to_string()))?;
                    *self.cached.lock().unwrap() = Some(url.clone());
                    Ok(url)
                }
                Err(e @ PlatformError::CredentialsRejected { .. }) => {
                    Err(AddressError::CredentialsRejected(e.to_string()))
                }
                Err(e) if e.is_retryable() => Err(AddressError::Transient(e.to_string())),
                Err(e) => Err(AddressError::Fatal(e.to_string())),
            }
        })
    }
}

fn logins(sim: &Sim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r["path"] == "/api/v2/teacher_login.json")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_polyv_sim_credentials_then_a_busy_stream_then_publishing() {
    let nginx = Nginx::start();
    let sim = block_in_place(|| {
        Sim::start_with(&[
            "--rtmp-base",
            &format!("rtmp://127.0.0.1:{}/live/", nginx.port()),
        ])
    });
    let stream = block_in_place(|| sim.channel(CHANNEL)["stream"].as_str().unwrap().to_string());
    block_in_place(|| sim.set_channel(CHANNEL, r#"{"password":"not-the-configured-one"}"#));
    let cfg = PolyvConfig {
        channel_id: CHANNEL.into(),
        password: Some(Secret::new(PASSWORD)),
        timeout_s: 5,
        endpoints: Endpoints::all(&sim.base),
        ..PolyvConfig::default()
    };
    let source = Arc::new(PolyvSource {
        client: PolyvClient::from_config(&cfg).unwrap(),
        cached: Mutex::new(None),
    });
    let sender = start(
        source,
        SenderOptions {
            credentials_retry: Duration::from_secs(1),
            ..fast_options()
        },
        0,
    );

    // 1. Credentials rejected: visible state, slow retries (every second here, 300 s by
    //    default), not the backoff's fast ones.
    let rejected = sender
        .wait_state("credentials rejected", Duration::from_secs(5), |s| {
            matches!(s, SenderState::CredentialsRejected { .. })
        })
        .await;
    match sender.control.state() {
        SenderState::CredentialsRejected { message, retry_in } => {
            assert!(message.contains("rejected the credentials"), "{message}");
            assert_eq!(retry_in, Duration::from_secs(1));
        }
        other => panic!("{other:?}"),
    }
    sleep_until(rejected + Duration::from_millis(2500)).await;
    let attempts = block_in_place(|| logins(&sim));
    assert!((2..=4).contains(&attempts), "{attempts} logins in 2.5 s");
    assert!(sender.control.stats().credentials_rejections >= 2);

    // 2. Someone else publishes the stream; the operator fixes the password and asks for a
    //    reconnect: nginx answers BadName, and each rejection brings a fresh login.
    let blocker = rtmp::connect(&url(&nginx.url(&stream)), &ConnectOptions::default())
        .await
        .expect("the other publisher");
    block_in_place(|| sim.set_channel(CHANNEL, &format!(r#"{{"password":"{PASSWORD}"}}"#)));
    sender.control.reconnect_now();
    wait_until("two rejected publishes", Duration::from_secs(10), || {
        sender.control.stats().publish_rejections >= 2
    })
    .await;
    let (_, reason) = sender.control.last_error().unwrap();
    assert!(reason.contains("NetStream.Publish.BadName"), "{reason}");
    assert!(!reason.contains(&stream), "the stream key leaked: {reason}");

    // 3. The stream is free again: publishing within the backoff.
    blocker.close().await.expect("the other publisher leaves");
    sender.wait_publishing(Duration::from_secs(15)).await;
    let stats = sender.control.stats();
    let after = block_in_place(|| logins(&sim));
    assert!(
        after - attempts > stats.publish_rejections as usize,
        "{after} logins for {stats:?}"
    );
    assert_eq!(sender.publish_hooks.load(Ordering::Relaxed), 1);
    let stats = sender.stop().await;
    assert_eq!(stats.sessions, 1, "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// Peers that speak broken RTMP

#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    HangUpMidHandshake,
    AnswerHttp,
    GarbageAfterHandshake,
    ChunkSizeOneThenNonsense,
    HugeChunkSizeThenEndlessMessage,
    ChunkSizeZeroThenNonsense,
    InvalidChunkSize,
}

const MISBEHAVIOURS: [Misbehaviour; 7] = [
    Misbehaviour::HangUpMidHandshake,
    Misbehaviour::AnswerHttp,
    Misbehaviour::GarbageAfterHandshake,
    Misbehaviour::ChunkSizeOneThenNonsense,
    Misbehaviour::HugeChunkSizeThenEndlessMessage,
    Misbehaviour::ChunkSizeZeroThenNonsense,
    Misbehaviour::InvalidChunkSize,
];

fn set_chunk_size(size: u32) -> Vec<u8> {
    // Type 0 header on chunk stream 2, timestamp 0, length 4, type 1, stream 0; then the size.
    let mut m = vec![0x02, 0, 0, 0, 0, 0, 4, 0x01, 0, 0, 0, 0];
    m.extend_from_slice(&size.to_be_bytes());
    m
}

fn nonsense(n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

async fn misbehave(mut socket: TcpStream, how: Misbehaviour) {
    let mut c0c1 = [0u8; 1537];
    if socket.read_exact(&mut c0c1).await.is_err() {
        return;
    }
    // S0, an S1 without a digest (the old-style handshake rml_rtmp accepts), S2 echoing C1.
    let mut s0s1s2 = vec![3u8];
    s0s1s2.extend_from_slice(&[0u8; 1536]);
    s0s1s2.extend_from_slice(&c0c1[1..]);
    let after: Vec<u8> = match how {
        Misbehaviour::HangUpMidHandshake => {
            let _ = socket.write_all(&s0s1s2[..700]).await;
            return;
        }
        Misbehaviour::AnswerHttp => {
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            Vec::new()
        }
        Misbehaviour::GarbageAfterHandshake => [s0s1s2, nonsense(8192)].concat(),
        Misbehaviour::ChunkSizeOneThenNonsense => {
            [s0s1s2, set_chunk_size(1), nonsense(4096)].concat()
        }
        Misbehaviour::HugeChunkSizeThenEndlessMessage => {
            // A 16 MB command message of which only a few bytes ever come.
            let header = vec![0x03, 0, 0, 0, 0xff, 0xff, 0xff, 0x14, 0, 0, 0, 0];
            [s0s1s2, set_chunk_size(0x7FFF_FFFF), header, nonsense(100)].concat()
        }
        Misbehaviour::ChunkSizeZeroThenNonsense => {
            [s0s1s2, set_chunk_size(0), nonsense(4096)].concat()
        }
        Misbehaviour::InvalidChunkSize => [s0s1s2, set_chunk_size(0xFFFF_FFFF)].concat(),
    };
    let _ = socket.write_all(&after).await;
    // Hold the connection until the client gives up on it (read what it sends meanwhile).
    let mut sink = [0u8; 4096];
    let _ = timeout(Duration::from_secs(5), async {
        while let Ok(n) = socket.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_speak_broken_rtmp_get_clean_reconnect_attempts_and_no_panic() {
    let (listener, addr) = listener(None).await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let i = accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(misbehave(socket, MISBEHAVIOURS[i % MISBEHAVIOURS.len()]));
            }
        }
    });
    let mut opts = fast_options();
    opts.connect.setup_timeout = Duration::from_millis(300);
    let sender = start(
        Arc::new(url(&format!("rtmp://{addr}/live/broken"))),
        opts,
        0,
    );
    let mut reasons = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::Relaxed) <= MISBEHAVIOURS.len() {
        assert!(
            Instant::now() < deadline,
            "only {} attempts",
            accepted.load(Ordering::Relaxed)
        );
        assert!(!sender.task.is_finished(), "the sender stopped");
        assert!(!sender.control.state().is_publishing());
        if let Some((_, reason)) = sender.control.last_error() {
            reasons.insert(reason);
        }
        sleep(Duration::from_millis(10)).await;
    }
    eprintln!("{} attempts; reasons:", accepted.load(Ordering::Relaxed));
    for r in &reasons {
        eprintln!("  {r}");
    }
    assert!(reasons.len() >= 3, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("invalid RTMP")),
        "{reasons:?}"
    );
    let stats = sender.stop().await;
    server.abort();
    assert!(
        stats.connect_failures as usize >= MISBEHAVIOURS.len(),
        "{stats:?}"
    );
    assert_eq!(stats.sessions, 0);
}

// ---------------------------------------------------------------------------------------------
// A link cut inside a network namespace

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_is_detected_and_publishing_resumes_when_it_is_back() {
    const STALL: Duration = Duration::from_secs(3);
    const STREAM: &str = "linkcut";
    let ns = match netns::NetNs::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED a_cut_link_is_detected_and_publishing_resumes_when_it_is_back: cannot create a network namespace ({why}); needs root or CAP_NET_ADMIN");
            return;
        }
    };
    // Declared after `ns`, so dropped (killed) first, also on panic.
    let nginx = block_in_place(|| {
        Nginx::start_with(NginxOptions {
            record_unique: true,
            // How the ingest forgets the publisher whose link died (real ingests time out
            // idle publishers too); otherwise it would refuse the new session as
            // "Already publishing" until its own timeout.
            drop_idle_publisher: Some(Duration::from_secs(2)),
            netns: Some(ns.name.clone()),
            listen: Some(ns.ns_ip),
        })
    });
    let sender = start(
        Arc::new(url(&nginx.url(STREAM))),
        SenderOptions {
            stall_timeout: STALL,
            ..fast_options()
        },
        0,
    );
    sender.wait_publishing(Duration::from_secs(10)).await;
    sleep(Duration::from_millis(2000)).await;

    ns.set_link(false);
    let cut = Instant::now();
    let detected = wait_until("stall detection", Duration::from_secs(10), || {
        sender.control.stats().stalls >= 1
    })
    .await;
    let took = detected - cut;
    eprintln!("link cut detected after {} ms", took.as_millis());
    assert!(took >= STALL - Duration::from_millis(500), "{took:?}");
    assert!(took <= STALL + Duration::from_millis(1500), "{took:?}");
    assert!(!sender.control.state().is_publishing());

    sleep_until(cut + Duration::from_secs(5)).await;
    ns.set_link(true);
    let up = Instant::now();
    let published = sender.wait_publishing(Duration::from_secs(10)).await;
    let recovery = published - up;
    eprintln!(
        "publishing again {} ms after the link came back",
        recovery.as_millis()
    );
    // The outage began at the stall detection (about 3 s after the cut), so the link is back
    // within the fast-retry window: the same promise as for a restarted ingest.
    assert!(recovery <= Duration::from_millis(1500), "{recovery:?}");
    let resumed = block_in_place(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while nginx.publish_count(STREAM) < 2 {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    });
    assert!(
        resumed,
        "nginx did not see the second publish:\n{}",
        nginx.error_log()
    );
    sleep(Duration::from_millis(2000)).await;
    let stats = sender.stop().await;
    assert_eq!(stats.sessions, 2, "{stats:?}");
    assert_eq!(stats.stalls, 1, "{stats:?}");
    let recordings = nginx.recordings(STREAM);
    let last = recordings
        .last()
        .expect("a recording of the resumed session");
    check_recording(last);
}

// ---------------------------------------------------------------------------------------------
// Timestamps past the 24-bit limit

/// Pipeline timestamps from 0xFFFFFF - 2000 ms. The first session crosses 0xFFFFFF in its
/// type-1/2 deltas (small, so no extended field: rml_rtmp sends an absolute timestamp only in
/// the first, type-0, chunk of each chunk stream); then a reconnect makes the second session's
/// type-0 chunks (its metadata and sequence headers, stamped past 0xFFFFFF) carry the 32-bit
/// extended timestamp, and every later delta builds on it. nginx must follow both: clean
/// decoding, no jumps. (The wire format, continuation chunks included, is checked byte by byte
/// in the session's unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_past_0xffffff_use_extended_timestamps_and_record_cleanly() {
    const BASE: u64 = 0xFF_FFFF - 2000;
    let nginx = Nginx::start_with(NginxOptions {
        record_unique: true,
        ..NginxOptions::default()
    });
    let sender = start(Arc::new(url(&nginx.url("extended"))), fast_options(), BASE);
    sender.wait_publishing(Duration::from_secs(5)).await;
    sleep(Duration::from_millis(3200)).await;
    sender.control.reconnect_now();
    wait_until("the second session", Duration::from_secs(5), || {
        sender.control.stats().sessions == 2
    })
    .await;
    sleep(Duration::from_millis(3000)).await;
    let stats = sender.stop().await;
    assert_eq!(stats.sessions, 2, "{stats:?}");
    let recordings = nginx.recordings("extended");
    assert_eq!(recordings.len(), 2, "{recordings:?}");
    for rec in &recordings {
        let span = check_recording(rec);
        eprintln!("{}: {span} ms of media", rec.display());
        assert!(span >= 2500, "{}: {span} ms", rec.display());
    }
    assert_eq!(nginx.publish_count("extended"), 2, "{}", nginx.error_log());
}
