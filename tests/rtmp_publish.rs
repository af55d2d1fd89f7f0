//! The RTMP publisher against real peers on loopback: nginx-rtmp (publishing and recording,
//! rejections), and peers that misbehave (hang up, send garbage, stay silent) at the far end
//! of an in-memory pipe, on tokio's paused clock so their timeouts fire exactly. Every wait is
//! bounded by a deadline; nothing sleeps and hopes.

#[path = "common/nginx.rs"]
mod nginx;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use polypush::media::{AudioInfo, PacketKind, StreamInfo};
use polypush::rtmp::{self, ConnectOptions, Connection, Phase, Publisher, RtmpError, RtmpUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::{sleep_until, timeout, Instant};

use nginx::{decode_errors, ffprobe_json, Nginx};

/// Options for the misbehaving-peer tests: short, so a hang shows up as a quick failure.
fn short() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(2),
        setup_timeout: Duration::from_millis(500),
        close_timeout: Duration::from_secs(1),
        ..ConnectOptions::default()
    }
}

/// Any single test here must finish well within this.
const TEST_BOUND: Duration = Duration::from_secs(20);

/// Encodes 3 s of test pattern and tone (H.264 + AAC in FLV) with the ffmpeg CLI.
fn encode_sample(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("sample.flv");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000"])
        .args(["-t", "3", "-c:v", "libx264", "-g", "25", "-bf", "0"])
        .args(["-c:a", "aac", "-f", "flv"])
        .arg(&out)
        .stdin(Stdio::null())
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg could not encode the sample");
    out
}

fn sample_info() -> Arc<StreamInfo> {
    Arc::new(StreamInfo {
        width: 320,
        height: 240,
        fps: 25.0,
        video_bitrate_kbps: 300,
        audio: Some(AudioInfo {
            sample_rate: 48_000,
            channels: 1,
            bitrate_kbps: 128,
        }),
        encoder: "polypush rtmp_publish test".into(),
    })
}

fn url(s: &str) -> RtmpUrl {
    RtmpUrl::parse(s).expect("valid URL")
}

/// A port on loopback where nothing listens (bound a moment ago, then released).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    timeout(TEST_BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {TEST_BOUND:?}"))
}

#[tokio::test]
async fn publishes_h264_aac_that_nginx_records_cleanly() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let packets = nginx::read_flv(&encode_sample(dir.path()), sample_info());
    assert!(packets.iter().any(|p| p.kind == PacketKind::Metadata));
    assert!(packets.iter().any(|p| p.kind == PacketKind::VideoHeader));
    assert!(packets.iter().any(|p| p.kind == PacketKind::AudioHeader));
    let media_bytes: u64 = packets.iter().map(|p| p.body.len() as u64).sum();
    let count = packets.len() as u64;

    let stats = bounded("publishing", async {
        // nginx acknowledges every `window_ack_size` bytes we announce; the sample is ~140 KiB.
        let mut opts = ConnectOptions::default();
        opts.session.window_ack_size = 32 * 1024;
        let mut publisher = rtmp::connect(&url(&nginx.url("sample")), &opts)
            .await
            .expect("connect and publish");
        assert_eq!(publisher.peer(), nginx.addr().to_string());

        // Paced by dts like a live encoder; the publisher serves inbound messages meanwhile.
        let start = Instant::now();
        let mut queue = packets.into_iter();
        let sent = rtmp::pump(&mut publisher, || {
            let next = queue.next();
            async move {
                if let Some(p) = &next {
                    sleep_until(start + Duration::from_millis(p.dts_ms)).await;
                }
                next
            }
        })
        .await
        .expect("publish the sample");
        assert_eq!(sent, count);
        // Bounded by SO_SNDBUF (256 KiB, doubled by Linux).
        let unsent = publisher.unsent_bytes().expect("SIOCOUTQ on Linux");
        assert!(unsent <= 512 * 1024, "{unsent}");

        let live = publisher.stats();
        assert!(live.bytes_sent > media_bytes, "{live:?}");
        assert!(live.acks_received >= 2, "{live:?}");
        assert!(live.bytes_acked_by_peer >= 64 * 1024, "{live:?}");
        assert!(live.bytes_acked_by_peer <= live.bytes_sent, "{live:?}");
        publisher.close().await.expect("clean close")
    })
    .await;
    assert_eq!(
        stats.video_messages_sent + stats.audio_messages_sent + stats.metadata_messages_sent,
        count
    );

    // close() returns after nginx hung up, i.e. after it closed the recording.
    let rec = nginx.recording("sample");
    assert!(
        rec.exists(),
        "no recording at {}; nginx log:\n{}",
        rec.display(),
        nginx.error_log()
    );
    let probe = ffprobe_json(&rec);
    let streams = probe["streams"].as_array().expect("streams");
    let codec = |name: &str| {
        streams
            .iter()
            .find(|s| s["codec_name"] == name)
            .unwrap_or_else(|| panic!("no {name} stream in {probe:#}"))
    };
    let video = codec("h264");
    assert_eq!(video["width"], 320);
    assert_eq!(video["height"], 240);
    assert_eq!(codec("aac")["sample_rate"], "48000");
    let errors = decode_errors(&rec);
    assert!(errors.trim().is_empty(), "decode errors: {errors}");
}

#[tokio::test]
async fn a_stream_name_in_use_is_rejected_with_bad_name() {
    let nginx = Nginx::start();
    bounded("bad name", async {
        let first = rtmp::connect(&url(&nginx.url("busy123")), &ConnectOptions::default())
            .await
            .expect("first publisher");
        let err = rtmp::connect(&url(&nginx.url("busy123")), &ConnectOptions::default())
            .await
            .err()
            .expect("second publisher must be rejected");
        match &err {
            RtmpError::PublishRejected {
                stream,
                code,
                description,
            } => {
                assert_eq!(stream, "bus***");
                assert_eq!(code, "NetStream.Publish.BadName");
                assert_eq!(description, "Already publishing");
            }
            other => panic!("expected PublishRejected, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("NetStream.Publish.BadName"), "{msg}");
        assert!(msg.contains("log in again"), "{msg}");
        assert!(!err.is_transient());
        first.close().await.expect("first publisher closes");
    })
    .await;
}

#[tokio::test]
async fn a_denied_publish_is_reported_as_dropped_by_the_ingest() {
    let nginx = Nginx::start();
    let err = bounded(
        "denied",
        rtmp::connect(&url(&nginx.url_denied("key1234")), &short()),
    )
    .await
    .err()
    .expect("publishing to the deny application must fail");
    assert!(
        matches!(&err, RtmpError::PublishDropped { addr, stream } if *addr == nginx.addr().to_string() && stream == "key***"),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(err.to_string().contains("check the key"), "{err}");
    assert!(nginx.wait_for_log("notify: publish", Duration::from_secs(5)));
}

#[tokio::test]
async fn a_hang_up_right_after_publish_start_ends_the_stream() {
    let nginx = Nginx::start();
    bounded("deny after start", async {
        // nginx-rtmp's `deny publish` says NetStream.Publish.Start and then hangs up; whether
        // connect() already sees the hang-up depends on timing, the next send or service does.
        let result = rtmp::connect(&url(&nginx.url_denied_after_start("key1234")), &short()).await;
        let err = match result {
            Err(e) => e,
            Ok(mut publisher) => loop {
                if let Err(e) = publisher.service().await {
                    break e;
                }
            },
        };
        assert!(
            matches!(
                &err,
                RtmpError::Closed {
                    phase: Phase::Streaming,
                    ..
                } | RtmpError::PublishDropped { .. }
            ),
            "{err:?}"
        );
    })
    .await;
    assert!(nginx.wait_for_log("access forbidden by rule", Duration::from_secs(5)));
}

#[tokio::test]
async fn an_ingest_restart_is_a_transient_error_and_the_same_port_works_again() {
    let mut nginx = Nginx::start();
    let target = url(&nginx.url("restart"));
    let mut publisher = bounded("first connect", rtmp::connect(&target, &short()))
        .await
        .expect("publish");
    nginx.stop();
    let err = bounded("noticing the restart", async {
        loop {
            if let Err(e) = publisher.service().await {
                break e;
            }
        }
    })
    .await;
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&nginx.addr().to_string()), "{err}");

    nginx.start_again();
    let publisher = bounded("second connect", rtmp::connect(&target, &short()))
        .await
        .expect("publish after the restart");
    bounded("close", publisher.close()).await.expect("close");
}

#[tokio::test]
async fn an_unknown_application_is_reported_while_connecting() {
    let nginx = Nginx::start();
    let err = bounded(
        "unknown app",
        rtmp::connect(&url(&nginx.url_in("nosuchapp", "key")), &short()),
    )
    .await
    .err()
    .expect("connecting to an unknown application must fail");
    assert!(
        matches!(
            &err,
            RtmpError::Closed {
                phase: Phase::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("application part"), "{err}");
}

#[tokio::test]
async fn nothing_listening_is_a_transient_refusal_naming_the_address() {
    let port = dead_port();
    let err = bounded(
        "refused",
        rtmp::connect(&url(&format!("rtmp://127.0.0.1:{port}/live/key")), &short()),
    )
    .await
    .err()
    .expect("nothing listens there");
    assert!(matches!(err, RtmpError::Refused { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        format!("ingest 127.0.0.1:{port} refused the connection: is the RTMP server running and the port right?")
    );
}

/// The address the misbehaving peers answer at.
const PEER: &str = "peer.test:1935";

/// Publishes to a peer that runs `behave` on its end of an in-memory pipe.
async fn connect_to_misbehaving<F, Fut>(behave: F) -> Result<Publisher, RtmpError>
where
    F: FnOnce(DuplexStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(behave(server));
    let target = url(&format!("rtmp://{PEER}/live/key"));
    Publisher::start(Connection::new(client, PEER), &target, &short()).await
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_hangs_up_at_once_is_a_transient_error() {
    let err = connect_to_misbehaving(|socket| async move { drop(socket) })
        .await
        .err()
        .expect("must fail");
    assert!(
        matches!(
            &err,
            RtmpError::Closed {
                phase: Phase::Handshake,
                ..
            } | RtmpError::Io { .. }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(err.to_string().contains(PEER), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_answers_http_is_a_protocol_error() {
    let err = connect_to_misbehaving(|mut socket| async move {
        let mut buf = [0u8; 1537];
        let _ = socket.read_exact(&mut buf).await;
        let _ = socket
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        std::future::pending::<()>().await;
    })
    .await
    .err()
    .expect("must fail");
    assert!(
        matches!(
            &err,
            RtmpError::Protocol {
                phase: Phase::Handshake,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("not RTMPS/HTTP"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn garbage_after_a_valid_handshake_is_an_error_not_a_panic() {
    let err = connect_to_misbehaving(|mut socket| async move {
        let mut c0c1 = [0u8; 1537];
        if socket.read_exact(&mut c0c1).await.is_err() {
            return;
        }
        // S0, an S1 without a digest (old-style handshake), and S2 echoing C1.
        let mut reply = vec![3u8];
        reply.extend_from_slice(&[0u8; 1536]);
        reply.extend_from_slice(&c0c1[1..]);
        let _ = socket.write_all(&reply).await;
        let garbage: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let _ = socket.write_all(&garbage).await;
        std::future::pending::<()>().await;
    })
    .await
    .err()
    .expect("must fail");
    // Depending on what the bytes look like as chunk headers: a parse error, or a message that
    // never completes.
    assert!(
        matches!(&err, RtmpError::Protocol { .. } | RtmpError::Timeout { .. }),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_times_out_in_the_handshake_after_exactly_the_setup_timeout() {
    let started = Instant::now();
    let err = connect_to_misbehaving(|socket| async move {
        std::future::pending::<()>().await;
        drop(socket);
    })
    .await
    .err()
    .expect("must time out");
    assert_eq!(Instant::now() - started, short().setup_timeout);
    match &err {
        RtmpError::Timeout {
            addr,
            phase: Phase::Handshake,
            after,
        } => {
            assert_eq!(addr, PEER);
            assert_eq!(*after, Duration::from_millis(500));
        }
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
    assert!(err.is_transient());
}
