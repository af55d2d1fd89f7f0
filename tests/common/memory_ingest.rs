//! An in-memory RTMP ingest for tests on tokio's paused clock: rml_rtmp's `ServerSession` at
//! the far end of a `tokio::io::duplex` pipe, put behind the sender's `Connector` seam where
//! TCP would be. Each connection attempt follows the next step of a plan (refuse, accept,
//! stall, hang up, reject, speak broken RTMP); every attempt and every message is recorded at
//! tokio's time. No socket, no timer of its own: the sender's timers are the only ones.
//!
//! The client end counts what the ingest has read, so it answers `unsent_bytes` like a kernel
//! socket's `SIOCOUTQ`: a peer that stops reading shows as bytes that never leave.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use polypush::rtmp::{
    ConnectFuture, ConnectOptions, Connection, Connector, RtmpError, RtmpUrl, Transport,
};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::time::Instant;

/// What the ingest does with one connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nobody listens: connection refused.
    Refuse,
    /// Accepts connect and publish, records everything until the publisher leaves.
    Accept,
    /// Accepts the publish, then never reads again (a dead link, a wedged ingest).
    AcceptThenStall,
    /// Accepts the publish, hangs up after this many video messages (an ingest restart).
    AcceptThenDrop { after_video: usize },
    /// Answers `publish` with `NetStream.Publish.BadName` (a key in use).
    RejectPublish,
    /// Hangs up when asked to publish (nginx-rtmp's `deny publish`, a CDN refusing a key).
    HangUpOnPublish,
    /// Speaks broken RTMP.
    Misbehave(Misbehaviour),
}

/// Ways of speaking broken RTMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    HangUpMidHandshake,
    AnswerHttp,
    GarbageAfterHandshake,
    ChunkSizeOneThenNonsense,
    HugeChunkSizeThenEndlessMessage,
    ChunkSizeZeroThenNonsense,
    InvalidChunkSize,
}

pub const MISBEHAVIOURS: [Misbehaviour; 7] = [
    Misbehaviour::HangUpMidHandshake,
    Misbehaviour::AnswerHttp,
    Misbehaviour::GarbageAfterHandshake,
    Misbehaviour::ChunkSizeOneThenNonsense,
    Misbehaviour::HugeChunkSizeThenEndlessMessage,
    Misbehaviour::ChunkSizeZeroThenNonsense,
    Misbehaviour::InvalidChunkSize,
];

/// What the ingest received, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    Metadata,
    VideoHeader(u32),
    Video {
        ts: u32,
        key: bool,
    },
    AudioHeader(u32),
    Audio(u32),
    /// `deleteStream`: the publisher ended the stream cleanly.
    Finished,
}

/// One accepted publish.
#[derive(Debug, Clone, Default)]
pub struct SessionLog {
    /// The stream key asked for.
    pub stream: String,
    pub got: Vec<Got>,
    /// When `NetStream.Publish.Start` went out.
    pub published_at: Option<Instant>,
}

impl SessionLog {
    pub fn video_count(&self) -> usize {
        self.got
            .iter()
            .filter(|g| matches!(g, Got::Video { .. }))
            .count()
    }

    pub fn media_count(&self) -> usize {
        self.got
            .iter()
            .filter(|g| !matches!(g, Got::Finished))
            .count()
    }
}

#[derive(Default)]
struct State {
    plan: VecDeque<Plan>,
    /// What every attempt after the plan gets.
    then: Option<Plan>,
    attempts: Vec<Instant>,
    sessions: Vec<Arc<Mutex<SessionLog>>>,
}

/// The ingest; clones share it.
#[derive(Clone, Default)]
pub struct MemoryIngest {
    state: Arc<Mutex<State>>,
    /// Bytes the pipe holds before the publisher's writes wait (its "socket buffer").
    pipe_bytes: usize,
}

impl MemoryIngest {
    /// Attempts follow `plan`, then every later one gets `then`.
    pub fn new(plan: impl IntoIterator<Item = Plan>, then: Plan) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                plan: plan.into_iter().collect(),
                then: Some(then),
                ..State::default()
            })),
            pipe_bytes: 4096,
        }
    }

    /// When each connection attempt came.
    pub fn attempts(&self) -> Vec<Instant> {
        self.state.lock().unwrap().attempts.clone()
    }

    /// Every accepted publish so far, in order.
    pub fn sessions(&self) -> Vec<SessionLog> {
        let state = self.state.lock().unwrap();
        state
            .sessions
            .iter()
            .map(|s| s.lock().unwrap().clone())
            .collect()
    }
}

impl Connector for MemoryIngest {
    fn connect<'a>(&'a self, url: &'a RtmpUrl, _: &'a ConnectOptions) -> ConnectFuture<'a> {
        let plan = {
            let mut state = self.state.lock().unwrap();
            state.attempts.push(Instant::now());
            let next = state.plan.pop_front();
            next.or(state.then).unwrap_or(Plan::Refuse)
        };
        let addr = format!("{}:{}", url.host(), url.port());
        Box::pin(async move {
            if plan == Plan::Refuse {
                return Err(RtmpError::Refused { addr });
            }
            let (client, server) = tokio::io::duplex(self.pipe_bytes);
            let consumed = Arc::new(AtomicU64::new(0));
            let log = Arc::new(Mutex::new(SessionLog::default()));
            let server = Counted {
                inner: server,
                count: consumed.clone(),
            };
            match plan {
                Plan::Misbehave(how) => {
                    tokio::spawn(misbehave(server, how));
                }
                _ => {
                    tokio::spawn(serve(server, plan, log.clone(), self.state.clone()));
                }
            }
            Ok(Connection::new(
                MemoryStream {
                    inner: client,
                    written: AtomicU64::new(0),
                    consumed,
                },
                addr,
            ))
        })
    }
}

/// The publisher's end: counts what it wrote, and knows what the ingest read.
struct MemoryStream {
    inner: DuplexStream,
    written: AtomicU64,
    consumed: Arc<AtomicU64>,
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Transport for MemoryStream {
    /// Written but not yet read by the ingest: what `SIOCOUTQ` reports for a socket.
    fn unsent_bytes(&self) -> Option<u32> {
        let written = self.written.load(Ordering::Relaxed);
        let consumed = self.consumed.load(Ordering::Relaxed);
        u32::try_from(written.saturating_sub(consumed)).ok()
    }
}

/// The ingest's end: counts what it read.
struct Counted {
    inner: DuplexStream,
    count: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The server end of one publisher: handshake, connect, then what `plan` says.
async fn serve(mut io: Counted, plan: Plan, log: Arc<Mutex<SessionLog>>, state: Arc<Mutex<State>>) {
    let mut ingest = Ingest {
        handshake: Handshake::new(PeerType::Server),
        session: None,
        plan,
        log,
        state,
        publishing: false,
        hang_up: false,
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if ingest.publishing && plan == Plan::AcceptThenStall {
            // Never read again; hold the pipe open.
            std::future::pending::<()>().await;
        }
        let n = match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let out = ingest.input(&buf[..n]);
        if !out.is_empty() && io.write_all(&out).await.is_err() {
            return;
        }
        if ingest.hang_up {
            return;
        }
    }
}

struct Ingest {
    handshake: Handshake,
    session: Option<ServerSession>,
    plan: Plan,
    log: Arc<Mutex<SessionLog>>,
    state: Arc<Mutex<State>>,
    publishing: bool,
    hang_up: bool,
}

impl Ingest {
    /// Handles bytes from the publisher; returns what to answer.
    fn input(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let rest = if self.session.is_none() {
            match self.handshake.process_bytes(input).expect("handshake") {
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
            input.to_vec()
        };
        if !rest.is_empty() && !self.hang_up {
            let results = self
                .session
                .as_mut()
                .unwrap()
                .handle_input(&rest)
                .expect("valid RTMP from polypush");
            self.apply(results, &mut out);
        }
        out
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

    fn record(&mut self, got: Got) {
        self.log.lock().unwrap().got.push(got);
        if let (Plan::AcceptThenDrop { after_video }, Got::Video { .. }) = (self.plan, got) {
            if self.log.lock().unwrap().video_count() >= after_video {
                self.hang_up = true;
            }
        }
    }

    fn on_event(&mut self, event: ServerSessionEvent, out: &mut Vec<u8>) {
        let session = self.session.as_mut().unwrap();
        let results = match event {
            ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                session.accept_request(request_id).unwrap()
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => match self.plan {
                Plan::RejectPublish => session
                    .reject_request(
                        request_id,
                        "NetStream.Publish.BadName",
                        "Already publishing",
                    )
                    .unwrap(),
                Plan::HangUpOnPublish => {
                    self.hang_up = true;
                    Vec::new()
                }
                _ => {
                    self.publishing = true;
                    {
                        let mut log = self.log.lock().unwrap();
                        log.stream = stream_key;
                        log.published_at = Some(Instant::now());
                    }
                    self.state.lock().unwrap().sessions.push(self.log.clone());
                    session.accept_request(request_id).unwrap()
                }
            },
            ServerSessionEvent::StreamMetadataChanged { .. } => {
                self.record(Got::Metadata);
                Vec::new()
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                let ts = timestamp.value;
                self.record(if data.len() > 1 && data[1] == 0 {
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
                self.record(if data.len() > 1 && data[1] == 0 {
                    Got::AudioHeader(ts)
                } else {
                    Got::Audio(ts)
                });
                Vec::new()
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.record(Got::Finished);
                // Like nginx-rtmp: done with the stream, hang up.
                self.hang_up = true;
                Vec::new()
            }
            _ => Vec::new(),
        };
        self.apply(results, out);
    }
}

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

async fn misbehave(mut io: Counted, how: Misbehaviour) {
    let mut c0c1 = [0u8; 1537];
    if io.read_exact(&mut c0c1).await.is_err() {
        return;
    }
    // S0, an S1 without a digest (the old-style handshake rml_rtmp accepts), S2 echoing C1.
    let mut s0s1s2 = vec![3u8];
    s0s1s2.extend_from_slice(&[0u8; 1536]);
    s0s1s2.extend_from_slice(&c0c1[1..]);
    let after: Vec<u8> = match how {
        Misbehaviour::HangUpMidHandshake => {
            let _ = io.write_all(&s0s1s2[..700]).await;
            return;
        }
        Misbehaviour::AnswerHttp => {
            let _ = io
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
    let _ = io.write_all(&after).await;
    // Hold the connection until the client gives up on it (read what it sends meanwhile).
    let mut sink = [0u8; 4096];
    while let Ok(n) = io.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}
