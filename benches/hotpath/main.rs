//! Hot-path benchmark: pre-encoded H.264/AAC access units through FLV packetizer → ring → RTMP
//! session → loopback TCP, on one sender thread.
//!
//! Run with `cargo bench --bench hotpath` (a plain `main`, `harness = false`). It prints
//! Markdown: machine info, one row per stage and per end-to-end pipeline, and a per-step
//! allocation attribution. `bench/hotpath.md` holds a recorded run and explains the rows.
//!
//! - Media: 10 s of 1280x720@30 libx264 (2500 kbit/s, veryfast, zerolatency, no B-frames, GOP
//!   60, AUDs inserted) and AAC-LC 128 kbit/s 48 kHz stereo, made once with the `ffmpeg` CLI
//!   into `$CARGO_TARGET_TMPDIR/hotpath-media-v1/` and reused. Access units are split at AUDs
//!   and ADTS headers and kept in memory as `Bytes`; video and audio are interleaved by DTS.
//! - The measured loop runs faster than real time over the units again and again with
//!   increasing timestamps. The sender is one thread: a current-thread tokio runtime around
//!   `rtmp::Publisher` (the production sender's type). The peer is a second thread that runs
//!   `rml_rtmp`'s handshake and `ServerSession` to accept `connect`/`publish`, then only drains
//!   the socket, answering with an RTMP Acknowledgement every 2.5 MB as nginx-rtmp does.
//! - A counting `#[global_allocator]` counts allocations (`alloc`, `alloc_zeroed`, `realloc`)
//!   and their bytes, only on threads that switched counting on (the sender, during the
//!   measured window), so the peer thread's work is not counted.
//! - CPU time is `getrusage`: the sender thread (`RUSAGE_THREAD`) and the whole process
//!   (`RUSAGE_SELF`, which includes the peer thread).
//!
//! Environment: `HOTPATH_SECS` (default 5) is the measured time of each end-to-end pipeline,
//! `HOTPATH_STAGE_SECS` (default 1) that of each single-stage row; `HOTPATH_PIN=1` pins the
//! sender and the peer thread to two CPUs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use polypush::flv::{
    aac_specific_config, audio_sequence_header_body, avc_decoder_config, is_keyframe_annexb,
    nal_unit_type, split_annexb, video_sequence_header_body, AudioPacketizer, VideoPacketizer,
};
use polypush::media::{AudioInfo, MediaPacket, PacketKind, StreamInfo};
use polypush::ring::{Ring, RingConfig};
use polypush::rtmp::{connect, ConnectOptions, Publisher, RtmpUrl, Session, SessionConfig};
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream as TokioTcpStream};

// ---------------------------------------------------------------------------------------------
// Counting allocator

struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread's allocations are counted. Const-initialized and without a
    /// destructor, so reading it never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

fn count(bytes: usize) {
    if counting() {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(bytes as u64, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are plain atomics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    /// A grow or shrink counts as one allocation of the new size: it may move (and copy) the
    /// block, which is what a per-packet allocation costs.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[derive(Debug, Clone, Copy, Default)]
struct AllocSnap {
    allocs: u64,
    bytes: u64,
}

impl AllocSnap {
    fn now() -> Self {
        Self {
            allocs: ALLOCS.load(Relaxed),
            bytes: ALLOC_BYTES.load(Relaxed),
        }
    }

    fn since(self, start: AllocSnap) -> AllocSnap {
        AllocSnap {
            allocs: self.allocs - start.allocs,
            bytes: self.bytes - start.bytes,
        }
    }

    fn add(&mut self, d: AllocSnap) {
        self.allocs += d.allocs;
        self.bytes += d.bytes;
    }
}

// ---------------------------------------------------------------------------------------------
// CPU time

/// User and system CPU time.
fn rusage(who: libc::c_int) -> (Duration, Duration) {
    // SAFETY: getrusage writes one `rusage` through the pointer, which points at a zeroed,
    // live value.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// This thread's (user, system) CPU time.
fn thread_cpu() -> (Duration, Duration) {
    rusage(libc::RUSAGE_THREAD)
}

fn process_cpu() -> Duration {
    let (user, sys) = rusage(libc::RUSAGE_SELF);
    user + sys
}

/// With `HOTPATH_PIN=1`, the first two CPUs this process may run on: the sender's and the
/// peer's. Off by default: on a shared machine a pinned thread cannot move away from a busy
/// CPU, which made runs noisier, not steadier.
fn cpu_pair() -> Option<(usize, usize)> {
    if std::env::var("HOTPATH_PIN").map_or(true, |v| v != "1") {
        return None;
    }
    // SAFETY: sched_getaffinity fills the zeroed cpu_set_t whose size is passed; CPU_ISSET
    // reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let mut cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set));
        Some((cpus.next()?, cpus.next()?))
    }
}

/// Pins the calling thread to `cpu` (best effort).
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one CPU set, passed with its size, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Where the peer thread runs; `u64::MAX` while unpinned.
static PEER_CPU: AtomicU64 = AtomicU64::new(u64::MAX);

// ---------------------------------------------------------------------------------------------
// Measuring

/// Counters of one measured window.
#[derive(Debug, Default, Clone, Copy)]
struct Measure {
    packets: u64,
    /// FLV body bytes.
    payload: u64,
    /// Bytes produced for / written to the socket (0 where the stage has no wire side).
    wire: u64,
    wall: Duration,
    /// The sender thread's user + system CPU time, and the system part.
    cpu_thread: Duration,
    cpu_thread_sys: Duration,
    cpu_process: Duration,
    alloc: AllocSnap,
    /// Slowest and fastest payload Gbit/s over the windows this one is the median of.
    gbit_range: (f64, f64),
}

impl Measure {
    fn gbit(&self) -> f64 {
        self.payload as f64 * 8.0 / self.wall.as_secs_f64() / 1e9
    }
}

/// Each measurement is split into this many windows and the median window (by payload
/// throughput) is reported, with the range: the machine may be shared.
const REPEATS: u32 = 3;

fn median(mut windows: Vec<Measure>) -> Measure {
    windows.sort_by(|a, b| a.gbit().total_cmp(&b.gbit()));
    let range = (windows[0].gbit(), windows[windows.len() - 1].gbit());
    let mut m = windows[windows.len() / 2];
    m.gbit_range = range;
    m
}

/// Starts counting on this thread; `stop` ends the window.
struct Window {
    start: Instant,
    cpu_thread: (Duration, Duration),
    cpu_process: Duration,
    alloc: AllocSnap,
}

impl Window {
    fn start() -> Window {
        COUNTING.with(|c| c.set(true));
        Window {
            alloc: AllocSnap::now(),
            cpu_thread: thread_cpu(),
            cpu_process: process_cpu(),
            start: Instant::now(),
        }
    }

    fn stop(self, packets: u64, payload: u64, wire: u64) -> Measure {
        let wall = self.start.elapsed();
        let cpu_process = process_cpu() - self.cpu_process;
        let (user, sys) = thread_cpu();
        let cpu_thread = user + sys - self.cpu_thread.0 - self.cpu_thread.1;
        let cpu_thread_sys = sys - self.cpu_thread.1;
        let alloc = AllocSnap::now().since(self.alloc);
        COUNTING.with(|c| c.set(false));
        Measure {
            packets,
            payload,
            wire,
            wall,
            cpu_thread,
            cpu_thread_sys,
            cpu_process,
            alloc,
            gbit_range: (0.0, 0.0),
        }
    }
}

fn secs_from_env(name: &str, default: f64) -> Duration {
    let s = std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(default);
    Duration::from_secs_f64(s)
}

const WARMUP: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Media

/// One encoded unit as the encoder hands it over: Annex B video or ADTS AAC.
struct Unit {
    video: bool,
    keyframe: bool,
    /// DTS within one pass over the media, ms.
    dts_ms: u64,
    data: Bytes,
}

struct Media {
    units: Vec<Unit>,
    /// Added to the timestamps once per pass, so they keep increasing.
    period_ms: u64,
    /// Metadata, AVC and AAC sequence headers.
    headers: Vec<MediaPacket>,
    video_frames: usize,
    audio_frames: usize,
    bytes: usize,
}

const FPS: u64 = 30;
const SAMPLE_RATE: u32 = 48_000;
const AAC_FRAME: u64 = 1024;

fn ffmpeg_args(video: &Path, audio: &Path) -> Vec<String> {
    let s = |v: &str| v.to_string();
    vec![
        s("-hide_banner"),
        s("-loglevel"),
        s("error"),
        s("-nostdin"),
        s("-y"),
        s("-f"),
        s("lavfi"),
        s("-t"),
        s("10"),
        s("-i"),
        format!("testsrc2=size=1280x720:rate={FPS}"),
        s("-f"),
        s("lavfi"),
        s("-t"),
        s("10"),
        s("-i"),
        format!("sine=frequency=440:sample_rate={SAMPLE_RATE}"),
        s("-map"),
        s("0:v"),
        s("-c:v"),
        s("libx264"),
        s("-preset"),
        s("veryfast"),
        s("-tune"),
        s("zerolatency"),
        s("-b:v"),
        s("2500k"),
        s("-maxrate"),
        s("2500k"),
        s("-bufsize"),
        s("2500k"),
        s("-g"),
        s("60"),
        s("-keyint_min"),
        s("60"),
        s("-sc_threshold"),
        s("0"),
        s("-bf"),
        s("0"),
        s("-pix_fmt"),
        s("yuv420p"),
        s("-bsf:v"),
        s("h264_metadata=aud=insert"),
        s("-f"),
        s("h264"),
        video.display().to_string(),
        s("-map"),
        s("1:a"),
        s("-ac"),
        s("2"),
        s("-c:a"),
        s("aac"),
        s("-b:a"),
        s("128k"),
        s("-f"),
        s("adts"),
        audio.display().to_string(),
    ]
}

/// Encodes the media once; later runs reuse the files.
fn media_files() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hotpath-media-v1");
    let video = dir.join("video.h264");
    let audio = dir.join("audio.aac");
    let present = |p: &Path| p.metadata().is_ok_and(|m| m.len() > 0);
    if present(&video) && present(&audio) {
        return (video, audio);
    }
    std::fs::create_dir_all(&dir).expect("create the media directory");
    let (tmp_v, tmp_a) = (dir.join("video.h264.tmp"), dir.join("audio.aac.tmp"));
    eprintln!(
        "encoding 10 s of 720p30 H.264 + AAC with ffmpeg into {}",
        dir.display()
    );
    let status = Command::new("ffmpeg")
        .args(ffmpeg_args(&tmp_v, &tmp_a))
        .status()
        .expect("run ffmpeg (is the ffmpeg CLI installed?)");
    assert!(status.success(), "ffmpeg failed: {status}");
    std::fs::rename(&tmp_v, &video).expect("rename video");
    std::fs::rename(&tmp_a, &audio).expect("rename audio");
    (video, audio)
}

/// Splits an Annex B stream into access units at access unit delimiters (NAL type 9).
fn split_access_units(stream: &Bytes) -> Vec<Bytes> {
    let base = stream.as_ptr() as usize;
    let mut starts: Vec<usize> = split_annexb(stream)
        .filter(|nal| nal_unit_type(nal) == 9)
        .map(|nal| {
            let at = nal.as_ptr() as usize - base - 3; // the `00 00 01` before it
            if at > 0 && stream[at - 1] == 0 {
                at - 1
            } else {
                at
            }
        })
        .collect();
    starts.push(stream.len());
    starts
        .windows(2)
        .map(|w| stream.slice(w[0]..w[1]))
        .collect()
}

/// Splits an ADTS stream into frames (header included).
fn split_adts(stream: &Bytes) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 7 <= stream.len() {
        let h = &stream[at..];
        assert!(
            h[0] == 0xff && h[1] & 0xf0 == 0xf0,
            "lost ADTS sync at {at}"
        );
        let len = (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        assert!(
            len >= 7 && at + len <= stream.len(),
            "bad ADTS length at {at}"
        );
        frames.push(stream.slice(at..at + len));
        at += len;
    }
    frames
}

fn load_media() -> Media {
    let (video_path, audio_path) = media_files();
    let video = Bytes::from(std::fs::read(&video_path).expect("read video"));
    let audio = Bytes::from(std::fs::read(&audio_path).expect("read audio"));
    let aus = split_access_units(&video);
    let frames = split_adts(&audio);
    assert!(
        is_keyframe_annexb(&aus[0]),
        "the first access unit is an IDR"
    );

    let avcc = avc_decoder_config(&aus[0]).expect("SPS/PPS in the first IDR");
    let asc = aac_specific_config(SAMPLE_RATE, 2).expect("AAC config");
    let mut metadata = MediaPacket::new(PacketKind::Metadata, 0, Bytes::new());
    metadata.info = Some(Arc::new(StreamInfo {
        width: 1280,
        height: 720,
        fps: FPS as f64,
        video_bitrate_kbps: 2500,
        audio: Some(AudioInfo {
            sample_rate: SAMPLE_RATE,
            channels: 2,
            bitrate_kbps: 128,
        }),
        encoder: "polypush hotpath bench".into(),
    }));
    let headers = vec![
        metadata,
        MediaPacket::new(
            PacketKind::VideoHeader,
            0,
            video_sequence_header_body(&avcc),
        ),
        MediaPacket::new(PacketKind::AudioHeader, 0, audio_sequence_header_body(&asc)),
    ];

    let mut units: Vec<Unit> = aus
        .iter()
        .enumerate()
        .map(|(i, au)| Unit {
            video: true,
            keyframe: is_keyframe_annexb(au),
            dts_ms: i as u64 * 1000 / FPS,
            data: au.clone(),
        })
        .chain(frames.iter().enumerate().map(|(i, f)| Unit {
            video: false,
            keyframe: false,
            dts_ms: i as u64 * AAC_FRAME * 1000 / u64::from(SAMPLE_RATE),
            data: f.clone(),
        }))
        .collect();
    // Stable: on equal DTS video stays first, as the encoders' interleaving does not matter.
    units.sort_by_key(|u| u.dts_ms);
    let last = units.last().map_or(0, |u| u.dts_ms);
    Media {
        period_ms: last + 1000 / FPS + 1,
        video_frames: aus.len(),
        audio_frames: frames.len(),
        bytes: video.len() + audio.len(),
        headers,
        units,
    }
}

// ---------------------------------------------------------------------------------------------
// The peer: rml_rtmp's server session for the setup, then a drain

/// rml_rtmp's handshake and server session, accepting `connect` and `publish`.
struct MiniIngest {
    handshake: Option<Handshake>,
    session: Option<ServerSession>,
    publishing: bool,
}

impl MiniIngest {
    fn new() -> Self {
        Self {
            handshake: Some(Handshake::new(PeerType::Server)),
            session: None,
            publishing: false,
        }
    }

    fn input(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if let Some(hs) = self.handshake.as_mut() {
            match hs.process_bytes(bytes).expect("server handshake") {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    out.extend(response_bytes);
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    out.extend(response_bytes);
                    self.handshake = None;
                    let (session, results) =
                        ServerSession::new(ServerSessionConfig::new()).expect("server session");
                    self.session = Some(session);
                    self.apply(results, out);
                    if !remaining_bytes.is_empty() {
                        self.input(&remaining_bytes, out);
                    }
                }
            }
            return;
        }
        let session = self.session.as_mut().expect("session after the handshake");
        let results = session
            .handle_input(bytes)
            .expect("valid RTMP from polypush");
        self.apply(results, out);
    }

    fn apply(&mut self, results: Vec<ServerSessionResult>, out: &mut Vec<u8>) {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(p) => out.extend(p.bytes),
                ServerSessionResult::RaisedEvent(event) => {
                    let session = self.session.as_mut().expect("session");
                    let answer = match event {
                        ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                            session.accept_request(request_id).expect("accept connect")
                        }
                        ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                            self.publishing = true;
                            session.accept_request(request_id).expect("accept publish")
                        }
                        _ => Vec::new(),
                    };
                    self.apply(answer, out);
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }
}

/// The client's window acknowledgement size (`SessionConfig::default()`): the peer acks every
/// this many bytes, as nginx-rtmp does.
const ACK_WINDOW: u64 = 2_500_000;

/// An RTMP Acknowledgement message (type 3) on chunk stream 2 with a full header.
fn ack_chunk(sequence: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x02; // fmt 0, csid 2
    c[6] = 4; // message length (bytes 4..7), timestamp (1..4) 0
    c[7] = 3; // type: Acknowledgement; message stream id (8..12) 0
    c[12..].copy_from_slice(&sequence.to_be_bytes());
    c
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerKind {
    /// Accept an RTMP publish, then drain and ack.
    Rtmp,
    /// Drain only.
    Raw,
}

/// A loopback listener whose one connection is served by a new thread; the thread returns the
/// bytes it received.
fn spawn_peer(kind: PeerKind) -> (SocketAddr, JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let handle = std::thread::spawn(move || {
        let cpu = PEER_CPU.load(Relaxed);
        if cpu != u64::MAX {
            pin_to(cpu as usize);
        }
        let (mut sock, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        if kind == PeerKind::Rtmp {
            let mut ingest = MiniIngest::new();
            let mut out = Vec::new();
            while !ingest.publishing {
                let n = sock.read(&mut buf).expect("read setup");
                assert!(n > 0, "publisher hung up during setup");
                received += n as u64;
                ingest.input(&buf[..n], &mut out);
                sock.write_all(&out).expect("answer");
                out.clear();
            }
        }
        let mut next_ack = (received / ACK_WINDOW + 1) * ACK_WINDOW;
        loop {
            match sock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => received += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            if kind == PeerKind::Rtmp && received >= next_ack {
                let _ = sock.write_all(&ack_chunk(received as u32));
                next_ack = (received / ACK_WINDOW + 1) * ACK_WINDOW;
            }
        }
        received
    });
    (addr, handle)
}

/// A tokio TCP connection configured like the production publisher's (no Nagle, 256 KiB send
/// buffer).
async fn raw_connect(addr: SocketAddr) -> TokioTcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_nodelay(true).expect("nodelay");
    socket
        .set_send_buffer_size(256 * 1024)
        .expect("send buffer");
    socket.connect(addr).await.expect("connect")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

// ---------------------------------------------------------------------------------------------
// Stages

fn kind_of(unit: &Unit) -> PacketKind {
    if unit.video {
        PacketKind::Video {
            keyframe: unit.keyframe,
        }
    } else {
        PacketKind::Audio
    }
}

/// Both packetizers, as one encode sink holds them.
#[derive(Default)]
struct Packetizers {
    video: VideoPacketizer,
    audio: AudioPacketizer,
}

impl Packetizers {
    fn packetize(&mut self, unit: &Unit, pass: u64, period: u64) -> MediaPacket {
        let body = if unit.video {
            self.video.packetize(&unit.data, unit.keyframe, 0, true)
        } else {
            self.audio.packetize(&unit.data)
        };
        MediaPacket::new(kind_of(unit), pass * period + unit.dts_ms, body)
    }
}

/// Runs `pass` (one pass over the media, returns packets, payload and wire bytes) for the
/// warm-up and then for at least `secs`.
fn measure(secs: Duration, mut pass: impl FnMut(u64) -> (u64, u64, u64)) -> Measure {
    let mut n = 0;
    let start = Instant::now();
    while n == 0 || start.elapsed() < WARMUP {
        pass(n);
        n += 1;
    }
    let mut windows = Vec::new();
    for _ in 0..REPEATS {
        let w = Window::start();
        let (mut packets, mut payload, mut wire) = (0, 0, 0);
        while packets == 0 || w.start.elapsed() < secs / REPEATS {
            let (p, b, x) = pass(n);
            packets += p;
            payload += b;
            wire += x;
            n += 1;
        }
        windows.push(w.stop(packets, payload, wire));
    }
    median(windows)
}

fn stage_packetize(media: &Media, secs: Duration) -> Measure {
    let mut p = Packetizers::default();
    measure(secs, |pass| {
        let mut payload = 0;
        for unit in &media.units {
            let pkt = p.packetize(unit, pass, media.period_ms);
            payload += pkt.body.len() as u64;
        }
        (media.units.len() as u64, payload, 0)
    })
}

/// Packetizing while the previous body of the same track is still held (by the ring, a
/// recorder or a sender that has not finished with it), with `packetize` as the packetizer.
fn stage_packetize_held(
    media: &Media,
    secs: Duration,
    mut packetize: impl FnMut(&Unit, u64) -> MediaPacket,
) -> Measure {
    let mut held_video: Option<MediaPacket> = None;
    let mut held_audio: Option<MediaPacket> = None;
    measure(secs, |pass| {
        let mut payload = 0;
        for unit in &media.units {
            let pkt = packetize(unit, pass * media.period_ms);
            payload += pkt.body.len() as u64;
            if unit.video {
                held_video = Some(pkt);
            } else {
                held_audio = Some(pkt);
            }
        }
        (media.units.len() as u64, payload, 0)
    })
}

/// FLV bodies of one pass, made once.
fn bodies(media: &Media) -> Vec<Bytes> {
    let mut p = Packetizers::default();
    media
        .units
        .iter()
        .map(|u| Bytes::copy_from_slice(&p.packetize(u, 0, 0).body))
        .collect()
}

fn stage_ring(media: &Media, bodies: &[Bytes], secs: Duration) -> Measure {
    let ring = Ring::new(RingConfig::default());
    for h in &media.headers {
        ring.push(h.clone());
    }
    while ring.try_pop().is_some() {}
    measure(secs, |pass| {
        let mut payload = 0;
        for (unit, body) in media.units.iter().zip(bodies) {
            let dts = pass * media.period_ms + unit.dts_ms;
            ring.push(MediaPacket::new(kind_of(unit), dts, body.clone()));
            let pkt = ring.try_pop().expect("just pushed");
            payload += pkt.body.len() as u64;
        }
        (media.units.len() as u64, payload, 0)
    })
}

fn rml_serialize(
    serializer: &mut ChunkSerializer,
    kind: PacketKind,
    dts: u64,
    body: &Bytes,
) -> Vec<u8> {
    let data = body.clone();
    let message = if kind.is_video() {
        RtmpMessage::VideoData { data }
    } else {
        RtmpMessage::AudioData { data }
    };
    let payload = message
        .into_message_payload(RtmpTimestamp::new((dts & 0xFFFF_FFFF) as u32), 1)
        .expect("message payload");
    serializer
        .serialize(&payload, false, false)
        .expect("serialize")
        .bytes
}

fn new_serializer() -> ChunkSerializer {
    let mut s = ChunkSerializer::new();
    s.set_max_chunk_size(4096, RtmpTimestamp::new(0))
        .expect("chunk size");
    s
}

/// rml_rtmp's chunk serializer alone, as `Session::send` calls it (via ClientSession).
fn stage_rml_serializer(media: &Media, bodies: &[Bytes], secs: Duration) -> Measure {
    let mut s = new_serializer();
    measure(secs, |pass| {
        let (mut payload, mut wire) = (0, 0);
        for (unit, body) in media.units.iter().zip(bodies) {
            let dts = pass * media.period_ms + unit.dts_ms;
            let chunks = rml_serialize(&mut s, kind_of(unit), dts, body);
            payload += body.len() as u64;
            wire += chunks.len() as u64;
        }
        (media.units.len() as u64, payload, wire)
    })
}

fn bench_url(addr: &str) -> RtmpUrl {
    RtmpUrl::parse(&format!("rtmp://{addr}/live/hotpath")).expect("url")
}

/// Our sans-IO session in the publishing state, set up against rml_rtmp's server in memory.
fn publishing_session() -> Session {
    let mut session =
        Session::new(&bench_url("127.0.0.1:1935"), &SessionConfig::default()).expect("session");
    let mut ingest = MiniIngest::new();
    let mut to_client = Vec::new();
    while !session.is_publishing() {
        let mut to_server = Vec::new();
        while let Some(b) = session.poll_transmit() {
            to_server.extend(b);
        }
        if !to_server.is_empty() {
            ingest.input(&to_server, &mut to_client);
        }
        assert!(
            !(to_server.is_empty() && to_client.is_empty()),
            "in-memory setup stalled"
        );
        if !to_client.is_empty() {
            session.handle_input(&to_client).expect("client input");
            to_client.clear();
        }
    }
    while session.poll_transmit().is_some() {}
    session
}

/// `Session::send` + `poll_transmit` (rml_rtmp's serializer plus our wrapper), no socket.
fn stage_session(media: &Media, bodies: &[Bytes], secs: Duration) -> Measure {
    let mut session = publishing_session();
    for h in &media.headers {
        session.send(h).expect("send header");
    }
    while session.poll_transmit().is_some() {}
    measure(secs, |pass| {
        let (mut payload, mut wire) = (0, 0);
        for (unit, body) in media.units.iter().zip(bodies) {
            let dts = pass * media.period_ms + unit.dts_ms;
            let pkt = MediaPacket::new(kind_of(unit), dts, body.clone());
            session.send(&pkt).expect("send");
            while let Some(chunks) = session.poll_transmit() {
                wire += chunks.len() as u64;
            }
            payload += body.len() as u64;
        }
        (media.units.len() as u64, payload, wire)
    })
}

/// Async twin of [`measure`] for the stages that own a socket: `$body` (one pass, may
/// `.await`, evaluates to packets, payload and wire bytes) runs for the warm-up and then for at
/// least `$secs`. A macro because the pass borrows the caller's socket mutably across awaits.
macro_rules! measure_async {
    ($secs:expr, |$pass:ident| $body:block) => {{
        let mut n: u64 = 0;
        let start = Instant::now();
        while n == 0 || start.elapsed() < WARMUP {
            let $pass = n;
            let _: (u64, u64, u64) = $body;
            n += 1;
        }
        let mut windows = Vec::new();
        for _ in 0..REPEATS {
            let w = Window::start();
            let (mut packets, mut payload, mut wire) = (0u64, 0u64, 0u64);
            while packets == 0 || w.start.elapsed() < $secs / REPEATS {
                let $pass = n;
                let (p, b, x): (u64, u64, u64) = $body;
                packets += p;
                payload += b;
                wire += x;
                n += 1;
            }
            windows.push(w.stop(packets, payload, wire));
        }
        median(windows)
    }};
}

/// Pre-serialized RTMP chunks (rml_rtmp's) written to the socket: the socket's share alone.
fn stage_socket(media: &Media, bodies: &[Bytes], secs: Duration) -> (Measure, u64) {
    let mut s = new_serializer();
    let chunks: Vec<Vec<u8>> = media
        .units
        .iter()
        .zip(bodies)
        .map(|(u, b)| rml_serialize(&mut s, kind_of(u), u.dts_ms, b))
        .collect();
    let (addr, peer) = spawn_peer(PeerKind::Raw);
    let m = runtime().block_on(async {
        let mut sock = raw_connect(addr).await;
        let m = measure_async!(secs, |_pass| {
            let (mut payload, mut wire) = (0, 0);
            for (c, b) in chunks.iter().zip(bodies) {
                sock.write_all(c).await.expect("write");
                wire += c.len() as u64;
                payload += b.len() as u64;
            }
            (chunks.len() as u64, payload, wire)
        });
        sock.shutdown().await.expect("shutdown");
        m
    });
    (m, peer.join().expect("peer"))
}

/// Packetize → ring → the FLV body straight to the socket: the whole path without the RTMP
/// serializer (so without rml_rtmp), i.e. what is ours end to end.
fn stage_pipeline_no_rtmp(media: &Media, secs: Duration) -> (Measure, u64) {
    let (addr, peer) = spawn_peer(PeerKind::Raw);
    let m = runtime().block_on(async {
        let mut sock = raw_connect(addr).await;
        let ring = Ring::new(RingConfig::default());
        let mut p = Packetizers::default();
        let m = measure_async!(secs, |pass| {
            let mut payload = 0;
            for unit in &media.units {
                ring.push(p.packetize(unit, pass, media.period_ms));
                let pkt = ring.try_pop().expect("just pushed");
                sock.write_all(&pkt.body).await.expect("write");
                payload += pkt.body.len() as u64;
            }
            (media.units.len() as u64, payload, payload)
        });
        sock.shutdown().await.expect("shutdown");
        m
    });
    (m, peer.join().expect("peer"))
}

/// The production sender keeps at most this much serialized in the publisher before it stops
/// popping from the ring (`rtmp::reconnect`'s `MAX_BACKLOG`).
const MAX_BACKLOG: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum SendMode {
    /// `Publisher::queue`, servicing the socket while the backlog is full: the production
    /// sender (`rtmp::reconnect`).
    Queue,
    /// `Publisher::send`, which waits for socket space itself.
    Send,
}

/// One readiness check, as the production sender's biased `select!` does before each pop:
/// handles inbound bytes (acks) and writes queued bytes if the socket is ready; never waits.
async fn poll_service(publisher: &mut Publisher) {
    tokio::select! {
        biased;
        r = publisher.service() => r.expect("service"),
        () = std::future::ready(()) => {}
    }
}

async fn publish_one(publisher: &mut Publisher, pkt: &MediaPacket, mode: SendMode) {
    match mode {
        SendMode::Queue => {
            poll_service(publisher).await;
            while publisher.backlog_bytes() >= MAX_BACKLOG {
                publisher.service().await.expect("service");
            }
            publisher.queue(pkt).expect("queue");
        }
        SendMode::Send => publisher.send(pkt).await.expect("send"),
    }
}

/// Per-step allocation counts of one pass, by packet kind (0 video, 1 audio).
#[derive(Default)]
struct Attribution {
    packets: [u64; 2],
    packetize: [AllocSnap; 2],
    push: [AllocSnap; 2],
    pop: [AllocSnap; 2],
    service: [AllocSnap; 2],
    publish: [AllocSnap; 2],
    drop: [AllocSnap; 2],
    /// rml_rtmp's chunk serializer on the same packet (a separate serializer, outside the
    /// publisher): the part of `publish` that is rml_rtmp's.
    rml: [AllocSnap; 2],
}

/// The whole path: packetize → ring → `rtmp::Publisher` (our `Session` over rml_rtmp's
/// `ClientSession`) → loopback socket → the peer thread. Returns the measurement, bytes the
/// peer received, bytes the publisher wrote, and (for `Queue`) a per-step attribution pass.
fn pipeline(
    media: &Media,
    secs: Duration,
    mode: SendMode,
) -> (Measure, u64, u64, Option<Attribution>) {
    let (addr, peer) = spawn_peer(PeerKind::Rtmp);
    let (m, written, attribution) = runtime().block_on(async {
        let mut publisher = connect(&bench_url(&addr.to_string()), &ConnectOptions::default())
            .await
            .expect("connect and publish");
        let ring = Ring::new(RingConfig::default());
        for h in &media.headers {
            ring.push(h.clone());
        }
        while let Some(h) = ring.try_pop() {
            publisher.queue(&h).expect("queue header");
        }
        let mut p = Packetizers::default();
        let m = {
            measure_async!(secs, |pass| {
                let before = publisher.written_bytes();
                let mut payload = 0;
                for unit in &media.units {
                    ring.push(p.packetize(unit, pass, media.period_ms));
                    let pkt = ring.try_pop().expect("just pushed");
                    publish_one(&mut publisher, &pkt, mode).await;
                    payload += pkt.body.len() as u64;
                }
                let wire = publisher.written_bytes() - before;
                (media.units.len() as u64, payload, wire)
            })
        };

        let attribution = if mode == SendMode::Queue {
            let mut a = Attribution::default();
            let mut rml = new_serializer();
            let pass = m.packets / media.units.len() as u64 + 100;
            COUNTING.with(|c| c.set(true));
            for unit in &media.units {
                let k = usize::from(!unit.video);
                a.packets[k] += 1;
                let s0 = AllocSnap::now();
                let pkt = p.packetize(unit, pass, media.period_ms);
                let s1 = AllocSnap::now();
                ring.push(pkt);
                let s2 = AllocSnap::now();
                let pkt = ring.try_pop().expect("just pushed");
                let s3 = AllocSnap::now();
                poll_service(&mut publisher).await;
                while publisher.backlog_bytes() >= MAX_BACKLOG {
                    publisher.service().await.expect("service");
                }
                let s4 = AllocSnap::now();
                publisher.queue(&pkt).expect("queue");
                let s5 = AllocSnap::now();
                drop(rml_serialize(&mut rml, pkt.kind, pkt.dts_ms, &pkt.body));
                let s6 = AllocSnap::now();
                drop(pkt);
                let s7 = AllocSnap::now();
                a.packetize[k].add(s1.since(s0));
                a.push[k].add(s2.since(s1));
                a.pop[k].add(s3.since(s2));
                a.service[k].add(s4.since(s3));
                a.publish[k].add(s5.since(s4));
                a.rml[k].add(s6.since(s5));
                a.drop[k].add(s7.since(s6));
            }
            COUNTING.with(|c| c.set(false));
            Some(a)
        } else {
            None
        };

        while publisher.backlog_bytes() > 0 {
            publisher.service().await.expect("flush");
        }
        let written = publisher.written_bytes();
        publisher.close().await.expect("close");
        (m, written, attribution)
    });
    (m, peer.join().expect("peer"), written, attribution)
}

// ---------------------------------------------------------------------------------------------
// Reference: what the proposed fixes would cost (not our production code)

/// A media-only RTMP chunker into one reused buffer: a type-1 header (same chunk stream and
/// message stream as the previous message) and type-3 continuation headers every 4096 bytes.
/// This is what replacing rml_rtmp's `ChunkSerializer` for audio/video would cost per packet.
struct MediaChunker {
    buf: Vec<u8>,
}

impl MediaChunker {
    const CHUNK: usize = 4096;

    fn chunk(&mut self, kind: PacketKind, delta_ms: u32, body: &[u8]) -> &[u8] {
        let (csid, type_id) = if kind.is_video() { (4u8, 9u8) } else { (5, 8) };
        self.buf.clear();
        self.buf.reserve(12 + body.len() + body.len() / Self::CHUNK);
        self.buf.push(0x40 | csid); // fmt 1
        self.buf
            .extend_from_slice(&delta_ms.min(0xFF_FFFF).to_be_bytes()[1..]);
        self.buf
            .extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        self.buf.push(type_id);
        for (i, c) in body.chunks(Self::CHUNK).enumerate() {
            if i > 0 {
                self.buf.push(0xC0 | csid); // fmt 3
            }
            self.buf.extend_from_slice(c);
        }
        &self.buf
    }
}

/// The packetizers' rewrite (same output bytes as `VideoPacketizer` with
/// `strip_parameter_sets` and `AudioPacketizer`) with one change: when the buffer lacks room,
/// reserve a whole slab, not one body, so that while earlier bodies are still held, later ones
/// are carved from the same allocation. Reference for the proposed fix only.
#[derive(Default)]
struct SlabPacketizer {
    video: BytesMut,
    audio: BytesMut,
    /// NAL ranges of the current access unit, reused (as `VideoPacketizer` does).
    nals: Vec<(usize, usize)>,
}

impl SlabPacketizer {
    const VIDEO_SLAB: usize = 64 * 1024;
    const AUDIO_SLAB: usize = 16 * 1024;

    fn reserve(buf: &mut BytesMut, need: usize, slab: usize) {
        if buf.capacity() - buf.len() < need {
            buf.reserve(need.max(slab));
        }
    }

    fn packetize(&mut self, unit: &Unit) -> Bytes {
        if unit.video {
            let au = &unit.data[..];
            let base = au.as_ptr() as usize;
            self.nals.clear();
            let mut need = 5;
            for nal in split_annexb(au).filter(|n| !matches!(nal_unit_type(n), 7..=9)) {
                let start = nal.as_ptr() as usize - base;
                self.nals.push((start, start + nal.len()));
                need += 4 + nal.len();
            }
            Self::reserve(&mut self.video, need, Self::VIDEO_SLAB);
            let b = &mut self.video;
            b.put_slice(&[if unit.keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0]);
            for &(start, end) in &self.nals {
                b.put_u32((end - start) as u32);
                b.put_slice(&au[start..end]);
            }
            b.split().freeze()
        } else {
            let header = if unit.data[1] & 1 == 1 { 7 } else { 9 };
            let frame = &unit.data[header..];
            Self::reserve(&mut self.audio, 2 + frame.len(), Self::AUDIO_SLAB);
            self.audio.put_slice(&[0xaf, 1]);
            self.audio.put_slice(frame);
            self.audio.split().freeze()
        }
    }
}

/// The proposed chunker alone, like [`stage_rml_serializer`] (reference only).
fn reference_own_chunker(media: &Media, bodies: &[Bytes], secs: Duration) -> Measure {
    let mut chunker = MediaChunker {
        buf: Vec::with_capacity(1 << 20),
    };
    let mut last = [0u64; 2];
    measure(secs, |pass| {
        let (mut payload, mut wire) = (0, 0);
        for (unit, body) in media.units.iter().zip(bodies) {
            let dts = pass * media.period_ms + unit.dts_ms;
            let k = usize::from(!unit.video);
            let delta = dts.saturating_sub(last[k]) as u32;
            last[k] = dts;
            wire += chunker.chunk(kind_of(unit), delta, body).len() as u64;
            payload += body.len() as u64;
        }
        (media.units.len() as u64, payload, wire)
    })
}

/// The pipeline with the proposed chunker instead of rml_rtmp's serializer (reference only).
fn reference_pipeline_own_chunker(media: &Media, secs: Duration) -> (Measure, u64) {
    let (addr, peer) = spawn_peer(PeerKind::Raw);
    let m = runtime().block_on(async {
        let mut sock = raw_connect(addr).await;
        let ring = Ring::new(RingConfig::default());
        let mut p = Packetizers::default();
        let mut chunker = MediaChunker {
            buf: Vec::with_capacity(1 << 20),
        };
        let mut last = [0u64; 2];
        let m = measure_async!(secs, |pass| {
            let (mut payload, mut wire) = (0, 0);
            for unit in &media.units {
                ring.push(p.packetize(unit, pass, media.period_ms));
                let pkt = ring.try_pop().expect("just pushed");
                let k = usize::from(!unit.video);
                let delta = pkt.dts_ms.saturating_sub(last[k]) as u32;
                last[k] = pkt.dts_ms;
                let bytes = chunker.chunk(pkt.kind, delta, &pkt.body);
                sock.write_all(bytes).await.expect("write");
                payload += pkt.body.len() as u64;
                wire += bytes.len() as u64;
            }
            (media.units.len() as u64, payload, wire)
        });
        sock.shutdown().await.expect("shutdown");
        m
    });
    (m, peer.join().expect("peer"))
}

// ---------------------------------------------------------------------------------------------
// Report

fn machine_info() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".into(), |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".into(), |s| s.trim().to_string());
    let load = std::fs::read_to_string("/proc/loadavg").map_or("unknown".into(), |s| {
        s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    });
    vec![
        format!("- CPU: {cpu}, {cores} logical CPUs available"),
        format!("- Linux {kernel}, load average before the run: {load}"),
        format!(
            "- polypush {}, `cargo bench` (the `bench` profile inherits `release`: thin LTO, \
             codegen-units 4); dependency versions from Cargo.lock",
            env!("CARGO_PKG_VERSION")
        ),
    ]
}

fn row(name: &str, m: &Measure) -> String {
    let s = m.wall.as_secs_f64();
    let gb = m.payload as f64 / 1e9;
    let per_pkt = |x: u64| x as f64 / m.packets as f64;
    let wire = if m.wire > 0 {
        format!("{:.2}", m.wire as f64 * 8.0 / s / 1e9)
    } else {
        "–".into()
    };
    let cpu = m.cpu_thread.as_secs_f64() / gb;
    format!(
        "| {name} | {:.0} | {:.2} ({:.2}–{:.2}) | {wire} | {:.2} | {:.0} | {cpu:.3} ({:.3}) | {:.1} | {:.3} |",
        m.packets as f64 / s,
        m.gbit(),
        m.gbit_range.0,
        m.gbit_range.1,
        per_pkt(m.alloc.allocs),
        per_pkt(m.alloc.bytes),
        m.cpu_thread_sys.as_secs_f64() / gb,
        8.0 / cpu,
        m.cpu_process.as_secs_f64() / gb,
    )
}

fn attribution_table(a: &Attribution) -> Vec<String> {
    let cell = |v: &[AllocSnap; 2], k: usize| {
        let n = a.packets[k].max(1) as f64;
        format!(
            "{:.2} / {:.0}",
            v[k].allocs as f64 / n,
            v[k].bytes as f64 / n
        )
    };
    let mut out = vec![
        "| step (one pass, sender thread) | video: allocs / bytes per packet | audio: allocs / bytes per packet |".to_string(),
        "|---|---|---|".to_string(),
    ];
    let rows: [(&str, &[AllocSnap; 2]); 7] = [
        (
            "`VideoPacketizer`/`AudioPacketizer::packetize` (previous body dropped)",
            &a.packetize,
        ),
        ("`Ring::push`", &a.push),
        ("`Ring::try_pop`", &a.pop),
        ("`Publisher::service` readiness poll (acks in)", &a.service),
        (
            "`Publisher::queue` (Session::send + rml_rtmp + write)",
            &a.publish,
        ),
        (
            "  of which rml_rtmp `ChunkSerializer::serialize` (same packet, separately)",
            &a.rml,
        ),
        ("drop of the popped packet", &a.drop),
    ];
    for (name, v) in rows {
        out.push(format!("| {name} | {} | {} |", cell(v, 0), cell(v, 1)));
    }
    let ours = |k: usize| {
        let n = a.packets[k].max(1) as f64;
        let allocs = a.packetize[k].allocs
            + a.push[k].allocs
            + a.pop[k].allocs
            + a.service[k].allocs
            + a.publish[k].allocs
            + a.drop[k].allocs;
        let bytes = a.packetize[k].bytes
            + a.push[k].bytes
            + a.pop[k].bytes
            + a.service[k].bytes
            + a.publish[k].bytes
            + a.drop[k].bytes;
        format!(
            "{:.2} / {:.0}",
            (allocs as f64 - a.rml[k].allocs as f64) / n,
            (bytes as f64 - a.rml[k].bytes as f64) / n
        )
    };
    out.push(format!(
        "| **ours** (all steps minus rml_rtmp's serializer) | {} | {} |",
        ours(0),
        ours(1)
    ));
    out
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let secs = secs_from_env("HOTPATH_SECS", 5.0);
    let stage_secs = secs_from_env("HOTPATH_STAGE_SECS", 1.0);
    let mut machine = machine_info();
    let media = load_media();
    // After ffmpeg, which would inherit the affinity.
    match cpu_pair() {
        Some((sender, peer)) => {
            pin_to(sender);
            PEER_CPU.store(peer as u64, Relaxed);
            machine.push(format!(
                "- sender thread pinned to CPU {sender}, peer thread to CPU {peer}"
            ));
        }
        None => machine.push("- threads not pinned (`HOTPATH_PIN=1` pins them)".to_string()),
    }
    let bodies = bodies(&media);
    let body_bytes: usize = bodies.iter().map(Bytes::len).sum();
    let mut slab = SlabPacketizer::default();
    for (unit, body) in media.units.iter().zip(&bodies) {
        assert_eq!(
            &slab.packetize(unit),
            body,
            "the reference packetizer's bytes differ"
        );
    }

    eprintln!("running stages ({stage_secs:?} each) and pipelines ({secs:?} each)…");
    let packetize = stage_packetize(&media, stage_secs);
    let mut p = Packetizers::default();
    let packetize_held = stage_packetize_held(&media, stage_secs, |u, offset| {
        MediaPacket::new(kind_of(u), offset + u.dts_ms, p.packetize(u, 0, 0).body)
    });
    let mut slab = SlabPacketizer::default();
    let slab_held = stage_packetize_held(&media, stage_secs, |u, offset| {
        MediaPacket::new(kind_of(u), offset + u.dts_ms, slab.packetize(u))
    });
    let ring = stage_ring(&media, &bodies, stage_secs);
    let rml = stage_rml_serializer(&media, &bodies, stage_secs);
    let own_chunker = reference_own_chunker(&media, &bodies, stage_secs);
    let session = stage_session(&media, &bodies, stage_secs);
    let (socket, socket_rx) = stage_socket(&media, &bodies, stage_secs);
    let (no_rtmp, no_rtmp_rx) = stage_pipeline_no_rtmp(&media, stage_secs);
    let (queue, queue_rx, queue_tx, attribution) = pipeline(&media, secs, SendMode::Queue);
    let (send, send_rx, send_tx, _) = pipeline(&media, secs, SendMode::Send);
    let (own, own_rx) = reference_pipeline_own_chunker(&media, stage_secs);
    // The peer also gets `deleteStream` from `close`, after the last `written_bytes`.
    assert!(
        queue_rx >= queue_tx && send_rx >= send_tx,
        "the peer lost bytes"
    );
    assert!(socket_rx >= socket.wire && no_rtmp_rx >= no_rtmp.payload && own_rx >= own.wire);

    let mut out = Vec::new();
    out.push("## Machine".to_string());
    out.extend(machine);
    out.push(String::new());
    out.push("## Media".to_string());
    out.push(format!(
        "- {} video access units + {} AAC frames per pass ({:.1} MB encoded, {:.1} MB of FLV bodies, {} ms of media); average {:.0} bytes per packet",
        media.video_frames,
        media.audio_frames,
        media.bytes as f64 / 1e6,
        body_bytes as f64 / 1e6,
        media.period_ms,
        body_bytes as f64 / media.units.len() as f64,
    ));
    out.push(String::new());
    out.push("## Throughput and allocations (steady state, sender thread)".to_string());
    out.push(String::new());
    out.push("| stage | packets/s | payload Gbit/s (range) | wire Gbit/s | allocs/packet | allocated bytes/packet | sender CPU s/GB (of which sys) | payload Gbit/s per sender core | process CPU s/GB |".to_string());
    out.push("|---|---|---|---|---|---|---|---|---|".to_string());
    out.push(row("packetize (FLV, previous body dropped)", &packetize));
    out.push(row(
        "packetize, previous body of the track still held",
        &packetize_held,
    ));
    out.push(row(
        "reference: packetize reserving 64 KiB (video) / 16 KiB (audio) slabs (proposal), previous body still held",
        &slab_held,
    ));
    out.push(row("ring push + try_pop", &ring));
    out.push(row("rml_rtmp `ChunkSerializer::serialize` alone", &rml));
    out.push(row(
        "reference: own media chunker into a reused buffer alone (proposal)",
        &own_chunker,
    ));
    out.push(row(
        "`Session::send` + `poll_transmit` (no socket)",
        &session,
    ));
    out.push(row(
        "socket write only (pre-serialized chunks, tokio)",
        &socket,
    ));
    out.push(row(
        "pipeline without RTMP: packetize → ring → body to socket",
        &no_rtmp,
    ));
    out.push(row(
        "**pipeline: packetize → ring → `Publisher::queue` → socket** (production sender)",
        &queue,
    ));
    out.push(row(
        "pipeline with `Publisher::send` instead of `queue`",
        &send,
    ));
    out.push(row(
        "reference: pipeline with an own media chunker into a reused buffer (proposal)",
        &own,
    ));
    out.push(String::new());
    out.push(format!(
        "Each row is the median of {REPEATS} windows by payload throughput (range: slowest–fastest \
         window). payload = FLV tag bodies; wire = bytes produced for / written to the socket \
         (RTMP chunks). CPU (user + sys, getrusage) per GB of payload: sender = the measuring \
         thread, process = also the peer thread. Gbit/s per sender core = 8 / sender CPU s/GB: \
         the rate one fully busy core would sustain, which load on a shared machine disturbs \
         less than wall-clock throughput."
    ));
    out.push(String::new());
    out.push(
        "## Where the allocations are (one extra pass of the production pipeline, per step)"
            .to_string(),
    );
    out.push(String::new());
    if let Some(a) = &attribution {
        out.extend(attribution_table(a));
    }
    out.push(String::new());
    let gbit = queue.gbit();
    out.push(format!(
        "Goal ≥ 1 Gbit/s payload through the production pipeline: {} ({gbit:.2} Gbit/s).",
        if gbit >= 1.0 { "met" } else { "NOT met" }
    ));
    println!("{}", out.join("\n"));
}
