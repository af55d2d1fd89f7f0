//! `GET /snapshot.jpg`: the picture is the picture.
//!
//! - End to end: the real `polypush run` streams a file of one known colour (0x3060C0, made with
//!   `ffmpeg -f lavfi -i color=…` and stored losslessly as FFV1, played by the file source) to a
//!   real nginx-rtmp; the snapshot is a 640x360 JPEG of that colour (decoded with the ffmpeg
//!   CLI: a range mistake, limited-range values stored as full range, would be off by 8–10
//!   levels, measured, and fail), served again byte for byte within a second and taken anew after it.
//! - The pipeline in-process: pictures asked of a running 720p pipeline, with the scaling and
//!   JPEG encoding times and sizes printed (the cost per snapshot).
//! - The status server over a hand-filled hub: 503 with the reason when there is no broadcast
//!   or capture is down, and the bearer token guards it.

mod common;

use common::daemon::Daemon;
use common::nginx::Nginx;
use polypush::capture::SourceSpec;
use polypush::encode::snapshot::{encode_jpeg, PictureKind};
use polypush::encode::{spawn_pipeline, AudioSettings, PipelineConfig, VideoSettings};
use polypush::secret::Secret;
use polypush::status::{serve, StatusHub, StatusSettings};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The source's colour, R G B.
const COLOUR: [f64; 3] = [48.0, 96.0, 192.0];
/// How far each channel's mean may be from it (JPEG and 4:2:0 round-trips of a flat picture
/// stay within 1–2 levels; a full/limited range mistake is 8 or more: [56, 98, 182]).
const TOLERANCE: f64 = 4.0;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 response with a binary body.
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on `addr`, with an optional bearer token; `None` while nothing listens.
fn get(addr: &str, path: &str, token: Option<&str>) -> Option<Reply> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Two seconds of one colour at 1280x720, lossless (FFV1), for the file source.
fn make_colour_file(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("color=c=0x3060C0:s=1280x720:r=25")
        .args(["-t", "2", "-pix_fmt", "yuv420p", "-c:v", "ffv1"])
        .arg(path)
        .output()
        .expect("the ffmpeg CLI is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ffprobe's width, height, pixel format and range of a JPEG file.
fn probe(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,pix_fmt,color_range",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe is installed");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The mean R, G, B of a JPEG, decoded by the ffmpeg CLI.
fn mean_rgb(path: &Path) -> [f64; 3] {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("the ffmpeg CLI is installed");
    assert!(out.status.success());
    let px = out.stdout.len() / 3;
    assert!(px > 0);
    let mut sum = [0f64; 3];
    for p in out.stdout.chunks_exact(3) {
        for c in 0..3 {
            sum[c] += f64::from(p[c]);
        }
    }
    sum.map(|s| s / px as f64)
}

fn assert_colour(rgb: [f64; 3]) {
    for c in 0..3 {
        assert!(
            (rgb[c] - COLOUR[c]).abs() <= TOLERANCE,
            "mean colour {rgb:?}, the source is {COLOUR:?}"
        );
    }
}

#[test]
fn the_snapshot_is_the_picture_in_its_colour_and_size_and_is_cached_for_a_second() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("colour.mkv");
    make_colour_file(&file);
    let status = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("polypush.toml");
    std::fs::write(
        &cfg,
        format!(
            "[polyv]\nchannel_id = \"1\"\n[target]\nurl = \"{}\"\n\
             [video]\nsource = \"file\"\nfile = {file:?}\nwidth = 1280\nheight = 720\nfps = 25\n\
             bitrate_kbps = 800\npreset = \"ultrafast\"\n[audio]\nsource = \"none\"\n\
             [status]\nlisten = \"{status}\"\n",
            nginx.url("snap")
        ),
    )
    .unwrap();
    let d = Daemon::start(&cfg, &[]);

    // Until the broadcast runs: 503 with a reason; then the picture.
    let started = Instant::now();
    let first = loop {
        match get(&status, "/snapshot.jpg", None) {
            Some(r) if r.status == 200 => break r,
            Some(r) => {
                assert_eq!(r.status, 503, "{}", r.text());
                assert!(r.text().starts_with("no picture"), "{}", r.text());
            }
            None => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no snapshot within 30 s: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(first.header("content-type"), "image/jpeg");
    assert_eq!(first.header("cache-control"), "no-store");
    assert_eq!(first.header("x-polypush-picture"), "live");
    let jpg = dir.path().join("first.jpg");
    std::fs::write(&jpg, &first.body).unwrap();
    assert_eq!(probe(&jpg), "mjpeg,640,360,yuvj420p,pc");
    let rgb = mean_rgb(&jpg);
    eprintln!("snapshot: {} bytes, mean RGB {rgb:?}", first.body.len());
    assert_colour(rgb);

    // Within a second of its picture: the same JPEG. (Both requests inside 900 ms of the
    // first one's start, which is before its picture was taken; else try again.)
    let mut cached = None;
    for _ in 0..5 {
        let t0 = Instant::now();
        let a = get(&status, "/snapshot.jpg", None).unwrap();
        let b = get(&status, "/snapshot.jpg", None).unwrap();
        if t0.elapsed() < Duration::from_millis(900) {
            cached = Some((a, b));
            break;
        }
    }
    let (a, b) = cached.expect("two requests within 900 ms");
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.body, b.body, "served from the cache");
    assert_eq!(
        a.header("x-polypush-captured-at"),
        b.header("x-polypush-captured-at")
    );
    // More than a second later: a new picture.
    std::thread::sleep(Duration::from_millis(1100));
    let c = get(&status, "/snapshot.jpg", None).unwrap();
    assert_eq!(c.status, 200, "{}", c.text());
    let taken = |r: &Reply| -> u64 { r.header("x-polypush-captured-at").parse().unwrap() };
    assert!(
        taken(&c) > taken(&a),
        "re-encoded: {} then {}",
        taken(&a),
        taken(&c)
    );
    let jpg = dir.path().join("later.jpg");
    std::fs::write(&jpg, &c.body).unwrap();
    assert_colour(mean_rgb(&jpg));

    d.signal(libc::SIGTERM);
    let (ok, _, log) = d.finish(Duration::from_secs(20));
    assert!(ok, "{log}");
}

/// The cost of one snapshot at 720p → 640: the encode thread's scaling, and the JPEG.
#[test]
fn a_running_pipeline_gives_pictures_on_request_and_what_they_cost() {
    let config = PipelineConfig {
        video_source: Some(SourceSpec::TestPatternVideo {
            width: 1280,
            height: 720,
            fps: 25,
            sync: false,
        }),
        audio_source: None,
        video_encoder: VideoSettings {
            width: 1280,
            height: 720,
            fps: 25,
            bitrate_kbps: 1000,
            preset: "ultrafast".into(),
            ..VideoSettings::default()
        },
        audio_encoder: AudioSettings::default(),
        health: Default::default(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let handle = spawn_pipeline(config, stop, |_| {}, |_, _| {}).expect("pipeline starts");
    let control = handle.control();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (mut scale, mut encode, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..10 {
        let rx = control.request_picture(640);
        let mut p = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), rx).await })
            .expect("a picture within 5 s")
            .expect("answered")
            .expect("a picture");
        assert_eq!((p.frame.width(), p.frame.height()), (640, 360));
        assert_eq!(p.kind, PictureKind::Live);
        let t = Instant::now();
        let jpeg = encode_jpeg(&mut p.frame).unwrap();
        encode.push(t.elapsed().as_secs_f64() * 1000.0);
        scale.push(p.scale_time.as_secs_f64() * 1000.0);
        bytes.push(jpeg.len());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!(
        "720p -> 640x360: scale {:.2} ms (max {:.2}), mjpeg q=5 {:.2} ms (max {:.2}), {} bytes on average",
        mean(&scale),
        scale.iter().cloned().fold(0.0, f64::max),
        mean(&encode),
        encode.iter().cloned().fold(0.0, f64::max),
        bytes.iter().sum::<usize>() / bytes.len()
    );
    // The test pattern is busy: tens of kB, not hundreds.
    assert!(
        bytes.iter().all(|&b| (5_000..200_000).contains(&b)),
        "{bytes:?}"
    );
    handle.stop_and_join().expect("pipeline ends cleanly");
    // The encode thread has ended: a request is answered at once.
    let rx = control.request_picture(640);
    let reply = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(1), rx).await })
        .expect("answered at once")
        .expect("answered");
    assert!(reply.is_err());
}

/// A server over `hub` on a free loopback port (stopped with the runtime).
async fn server(hub: &StatusHub, token: Option<&str>) -> String {
    let cfg = StatusSettings {
        listen: "127.0.0.1:0".into(),
        ..StatusSettings::default()
    };
    let (addr, _task) = serve(
        &cfg,
        hub.clone(),
        token.map(Secret::new),
        std::future::pending::<()>(),
    )
    .await
    .expect("status server starts");
    addr.to_string()
}

async fn get_async(addr: String, path: &'static str, token: Option<&'static str>) -> Reply {
    tokio::task::spawn_blocking(move || get(&addr, path, token).expect("answers"))
        .await
        .unwrap()
}

#[tokio::test]
async fn no_picture_is_a_503_with_the_reason() {
    let hub = StatusHub::new();
    let addr = server(&hub, None).await;
    let r = get_async(addr.clone(), "/snapshot.jpg", None).await;
    assert_eq!(r.status, 503);
    assert!(r.header("content-type").starts_with("text/plain"));
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.text().trim(), "no picture: no broadcast running");

    hub.media_waiting(
        "cannot open /dev/video0: No such device".into(),
        3,
        Duration::from_secs(3),
    );
    let r = get_async(addr.clone(), "/snapshot.jpg", None).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text().trim(),
        "no picture: capture is down: cannot open /dev/video0: No such device"
    );
}

#[tokio::test]
async fn the_token_guards_the_snapshot() {
    let hub = StatusHub::new();
    let addr = server(&hub, Some("s3cret")).await;
    let r = get_async(addr.clone(), "/snapshot.jpg", None).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").starts_with("Bearer"));
    let r = get_async(addr, "/snapshot.jpg", Some("s3cret")).await;
    assert_eq!(r.status, 503, "through the guard: {}", r.text());
}

/// While the camera is away the picture is the darkened still the stream shows, marked so.
#[test]
fn while_the_camera_is_away_the_picture_is_the_still() {
    let pattern = SourceSpec::TestPatternVideo {
        width: 320,
        height: 240,
        fps: 25,
        sync: false,
    };
    let config = PipelineConfig {
        video_source: Some(SourceSpec::Faulty {
            inner: Box::new(pattern),
            fail_after: Duration::from_millis(800),
            down_for: Duration::from_secs(3600),
        }),
        audio_source: None,
        video_encoder: VideoSettings {
            width: 320,
            height: 240,
            fps: 25,
            bitrate_kbps: 300,
            preset: "ultrafast".into(),
            ..VideoSettings::default()
        },
        audio_encoder: AudioSettings::default(),
        health: Default::default(),
    };
    let handle = spawn_pipeline(config, Arc::new(AtomicBool::new(false)), |_| {}, |_, _| {})
        .expect("pipeline starts");
    let control = handle.control();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let take = || {
        let rx = control.request_picture(320);
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), rx).await })
            .expect("a picture within 5 s")
            .expect("answered")
            .expect("a picture")
    };
    let mean_luma = |p: &polypush::encode::snapshot::Picture| {
        let (w, h, stride) = (
            p.frame.width() as usize,
            p.frame.height() as usize,
            p.frame.stride(0),
        );
        let y = p.frame.data(0);
        (0..h)
            .flat_map(|r| y[r * stride..r * stride + w].iter())
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / (w * h) as f64
    };
    let live = take();
    assert_eq!(live.kind, PictureKind::Live);
    assert!(common::poll_until(Duration::from_secs(10), || control
        .track_state(polypush::capture::Track::Video)
        .is_reconnecting()));
    let still = take();
    assert_eq!(still.kind, PictureKind::Still);
    assert_eq!((still.frame.width(), still.frame.height()), (320, 240));
    let (l, s) = (mean_luma(&live), mean_luma(&still));
    assert!(
        s < l * 0.6,
        "the still is darkened: live {l:.1}, still {s:.1}"
    );
    drop(handle);
}
