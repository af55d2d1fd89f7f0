//! systemd's `sd_notify` protocol, on a datagram socket of our own standing in for systemd's
//! `NOTIFY_SOCKET`: `READY=1`, `STATUS=`, `WATCHDOG=1` only while frames flow (stop the
//! source: the pings stop; start it again: they resume), `STOPPING=1`. First at the library
//! level ([`Notifier`], [`spawn_watchdog`], [`spawn_status`] over a [`StatusHub`] the test
//! drives, on tokio's paused clock: the pings are counted exactly), then end to end against
//! the `polypush` binary with nginx-rtmp. And logging: without journald (as here) the daemon
//! falls back to readable stderr lines cleanly.

mod common;

use common::nginx::Nginx;
use common::*;
use polypush::notify::{spawn_status, spawn_watchdog, Notifier};
use polypush::rtmp::SenderControl;
use polypush::rtmp::SenderPhase;
use polypush::status::{BroadcastSnapshot, DaemonState, ScheduleStatus, StatusHub};
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Our stand-in for systemd's notification socket.
struct Listener {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sock: UnixDatagram,
}

impl Listener {
    fn new() -> Listener {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        Listener {
            _dir: dir,
            path,
            sock,
        }
    }

    /// The next datagram within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Everything already queued, without waiting.
    fn drain(&self) -> Vec<String> {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let mut out = Vec::new();
        while let Ok(n) = self.sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.sock.set_nonblocking(false).unwrap();
        out
    }

    /// Everything that is sent while `d` passes on tokio's clock.
    async fn collect_during(&self, d: Duration) -> Vec<String> {
        self.drain();
        tokio::time::sleep_until(tokio::time::Instant::now() + d).await;
        self.drain()
    }

    /// Datagrams until `done` holds for what came (or `within` passes).
    fn collect_until(&self, within: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let end = Instant::now() + within;
        let mut out = Vec::new();
        while !done(&out) {
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.recv(left.max(Duration::from_millis(1))) {
                Some(m) => out.push(m),
                None => break,
            }
        }
        out
    }

    /// Everything that arrives within `d`.
    fn collect_for(&self, d: Duration) -> Vec<String> {
        let end = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            if let Some(m) = self.recv(left) {
                out.push(m);
            }
        }
        out
    }

    /// Waits for a datagram for which `pred` holds; the others seen meanwhile come along.
    fn wait_for(
        &self,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (Option<String>, Vec<String>) {
        let end = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.recv(left.max(Duration::from_millis(1))) {
                Some(m) if pred(&m) => return (Some(m), seen),
                Some(m) => seen.push(m),
                None => break,
            }
        }
        (None, seen)
    }
}

fn pings(msgs: &[String]) -> usize {
    msgs.iter().filter(|m| *m == "WATCHDOG=1\n").count()
}

#[test]
fn protocol_messages_arrive_byte_exact() {
    let l = Listener::new();
    let n = Notifier::with_socket(&l.path, None);
    assert!(n.is_enabled());
    n.ready();
    n.status("live: publishing\nto 127.0.0.1:1935\r\n");
    n.ping();
    n.stopping();
    let t = Duration::from_secs(5);
    assert_eq!(l.recv(t).as_deref(), Some("READY=1\n"));
    assert_eq!(
        l.recv(t).as_deref(),
        Some("STATUS=live: publishing to 127.0.0.1:1935\n"),
        "one line, no control characters"
    );
    assert_eq!(l.recv(t).as_deref(), Some("WATCHDOG=1\n"));
    assert_eq!(l.recv(t).as_deref(), Some("STOPPING=1\n"));
    assert_eq!(l.recv(Duration::from_millis(100)), None);
}

#[test]
fn without_a_socket_or_watchdog_nothing_runs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in_rt = rt.enter();
    let hub = StatusHub::new();
    let off = Notifier::disabled();
    off.ready();
    assert!(spawn_watchdog(off.clone(), hub.clone()).is_none());
    assert!(spawn_status(off, hub.clone()).is_none());
    // A socket but no WATCHDOG_USEC: status yes, watchdog no.
    let l = Listener::new();
    let n = Notifier::with_socket(&l.path, None);
    assert!(spawn_watchdog(n.clone(), hub.clone()).is_none());
    let status = spawn_status(Arc::new(n), hub).expect("status task");
    assert_eq!(
        l.recv(Duration::from_secs(5)).as_deref(),
        Some("STATUS=starting\n")
    );
    status.abort();
}

/// Drives a hub the way the broadcast does (every 50 ms of tokio's clock): a broadcast whose
/// counters move while `frames` (and `packets`) say so.
struct FakeBroadcast {
    frames: Arc<AtomicBool>,
    packets: Arc<AtomicBool>,
    publishing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeBroadcast {
    fn start(hub: &StatusHub) -> FakeBroadcast {
        hub.set_state(DaemonState::Live);
        hub.broadcast_started(SenderControl::new());
        let flag = |v| Arc::new(AtomicBool::new(v));
        let (frames, packets, publishing) = (flag(true), flag(true), flag(true));
        let task = {
            let (hub, frames, packets, publishing) = (
                hub.clone(),
                frames.clone(),
                packets.clone(),
                publishing.clone(),
            );
            tokio::spawn(async move {
                let (mut f, mut p) = (0u64, 0u64);
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                loop {
                    tick.tick().await;
                    if frames.load(Ordering::SeqCst) {
                        f += 5;
                    }
                    if packets.load(Ordering::SeqCst) {
                        p += 5;
                    }
                    let mut b = BroadcastSnapshot {
                        sender_state: if publishing.load(Ordering::SeqCst) {
                            SenderPhase::Publishing
                        } else {
                            SenderPhase::Waiting
                        },
                        ..Default::default()
                    };
                    b.pipeline.video.frames_encoded = f;
                    b.sender.packets_sent = p;
                    hub.update_broadcast(b);
                }
            })
        };
        FakeBroadcast {
            frames,
            packets,
            publishing,
            task,
        }
    }
}

impl Drop for FakeBroadcast {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn watchdog_pings_only_while_frames_flow() {
    // WatchdogSec=400ms: a look every 200 ms; a stall shows after the 400 ms grace.
    let l = Listener::new();
    let n = Notifier::with_socket(&l.path, Some(Duration::from_millis(400)));
    assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(400)));
    let hub = StatusHub::new();
    let fake = FakeBroadcast::start(&hub);
    let dog = spawn_watchdog(n, hub.clone()).expect("watchdog enabled");
    let second = Duration::from_secs(1);
    let settle = Duration::from_millis(1200);

    // A look every 200 ms, a ping at every look: 10 in 2 s (one more at an edge).
    let flowing = l.collect_during(2 * second).await;
    assert!(
        (10..=11).contains(&pings(&flowing)),
        "frames flow: {flowing:?}"
    );
    assert!(flowing.iter().all(|m| m == "WATCHDOG=1\n"), "{flowing:?}");

    // Stop the source: frames stand still, and so does the sender.
    fake.frames.store(false, Ordering::SeqCst);
    fake.packets.store(false, Ordering::SeqCst);
    let stopping = l.collect_during(settle).await;
    assert!(pings(&stopping) <= 4, "{stopping:?}");
    let stalled = l.collect_during(2 * second).await;
    assert_eq!(pings(&stalled), 0, "no frames: no pings");

    // Start it again: pings resume, at the next look.
    fake.frames.store(true, Ordering::SeqCst);
    fake.packets.store(true, Ordering::SeqCst);
    let resumed = l.collect_during(Duration::from_millis(250)).await;
    assert!(
        pings(&resumed) >= 1,
        "pings resume with the frames: {resumed:?}"
    );
    assert!(pings(&l.collect_during(second).await) >= 4);

    // The sender stuck while publishing: frames alone are not enough.
    fake.packets.store(false, Ordering::SeqCst);
    l.collect_during(settle).await;
    assert_eq!(
        pings(&l.collect_during(2 * second).await),
        0,
        "sender stuck: no pings"
    );

    // Reconnecting (not publishing): its packets cannot move; frames suffice.
    fake.publishing.store(false, Ordering::SeqCst);
    l.collect_during(Duration::from_millis(300)).await;
    assert!(
        pings(&l.collect_during(second).await) >= 4,
        "reconnecting: frames suffice"
    );

    // No broadcast should run (idle, stopping): the loop is alive, pings go on.
    drop(fake);
    hub.broadcast_ended(None, false);
    hub.set_state(DaemonState::Idle);
    l.collect_during(Duration::from_millis(300)).await;
    assert!(pings(&l.collect_during(second).await) >= 4, "idle pings");
    hub.set_state(DaemonState::Stopping);
    l.collect_during(Duration::from_millis(300)).await;
    assert!(
        pings(&l.collect_during(second).await) >= 4,
        "stopping pings"
    );
    dog.abort();
}

#[tokio::test(start_paused = true)]
async fn status_follows_the_state_once_per_change() {
    let l = Listener::new();
    let n = Notifier::with_socket(&l.path, None);
    let hub = StatusHub::new();
    let task = spawn_status(n, hub.clone()).expect("status task");
    let look = Duration::from_millis(1100); // the task looks once a second
    assert_eq!(l.collect_during(look).await, ["STATUS=starting\n"]);

    hub.set_state(DaemonState::Idle);
    hub.set_schedule(ScheduleStatus {
        configured: true,
        next_start: Some(SystemTime::now() + Duration::from_secs(3600)),
        ..Default::default()
    });
    let idle = l.collect_during(look).await;
    assert_eq!(idle.len(), 1, "{idle:?}");
    assert!(idle[0].starts_with("STATUS=idle: next window "), "{idle:?}");

    // The broadcast's numbers first, then the state: one change, one line.
    hub.broadcast_started(SenderControl::new());
    let mut b = BroadcastSnapshot {
        sender_state: SenderPhase::Publishing,
        delivered_kbps: 2480.0,
        encoder_fps: 25.0,
        ..Default::default()
    };
    b.ring.queued_delay_ms = 40;
    hub.update_broadcast(b.clone());
    hub.set_state(DaemonState::Live);
    assert_eq!(
        l.collect_during(look).await,
        ["STATUS=live: publishing, 2480 kbit/s, 25.0 fps, queue 40 ms\n"]
    );
    // Unchanged: nothing more is sent.
    assert_eq!(
        l.collect_during(Duration::from_secs(10)).await,
        Vec::<String>::new()
    );

    b.sender_state = SenderPhase::Waiting;
    b.sender_error = Some("connection refused".into());
    hub.update_broadcast(b);
    assert_eq!(
        l.collect_during(look).await,
        ["STATUS=live: reconnecting (connection refused)\n"]
    );
    task.abort();
}

// ---- End to end, against the binary ------------------------------------------------------

/// A `polypush` child, killed by its PID on drop (also when a test fails).
struct Daemon {
    child: Option<Child>,
    stderr: PathBuf,
}

impl Daemon {
    fn start(config: &Path, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Daemon {
        let stderr = dir.join("polypush.stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_polypush"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start polypush");
        Daemon {
            child: Some(child),
            stderr,
        }
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the PID of our own child, not yet waited for, so not reused.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    /// Waits for the exit; SIGKILL after `within`. The exit code, if it exited by itself.
    fn wait(&mut self, within: Duration) -> Option<i32> {
        wait_bounded(self.child.take()?, within)?.code()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the daemon's stderr (a file) contains `needle`.
    fn wait_for_stderr(&self, needle: &str, within: Duration) -> bool {
        poll_until(within, || self.stderr().contains(needle))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn daemon_notifies_systemd_end_to_end() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_run_config(dir.path(), None, "");
    let l = Listener::new();
    let socket = l.path.to_str().unwrap().to_string();
    let url = nginx.url("x");
    let mut d = Daemon::start(
        &cfg,
        &["run", "--url", &url],
        &[
            ("NOTIFY_SOCKET", socket.as_str()),
            ("WATCHDOG_USEC", "1000000"),
        ],
        dir.path(),
    );

    // READY=1 once publishing started.
    let (ready, before) = l.wait_for(Duration::from_secs(30), |m| m == "READY=1\n");
    assert!(
        ready.is_some(),
        "no READY=1 within 30 s; got {before:?}\n{}",
        d.stderr()
    );
    assert!(
        nginx.publish_count("x") >= 1,
        "READY=1 came before nginx saw the publish"
    );
    // Running: pings (every half second; counted exactly in the paused-clock test above),
    // and a STATUS line that says we publish.
    let running = l.collect_until(Duration::from_secs(30), |seen| pings(seen) >= 3);
    let all: Vec<&String> = before.iter().chain(&running).collect();
    assert!(
        pings(&running) >= 3,
        "watchdog pings while frames flow: {running:?}"
    );
    assert!(
        all.iter().any(|m| m.starts_with("STATUS=live: publishing")),
        "a STATUS line while publishing: {all:?}"
    );
    for m in &all {
        assert!(m.ends_with('\n') && m.matches('\n').count() == 1, "{m:?}");
    }

    // SIGTERM: STOPPING=1, then a clean exit.
    d.signal(libc::SIGTERM);
    let (stopping, _) = l.wait_for(Duration::from_secs(10), |m| m == "STOPPING=1\n");
    assert!(
        stopping.is_some(),
        "no STOPPING=1 after SIGTERM\n{}",
        d.stderr()
    );
    let code = d.wait(Duration::from_secs(20));
    let stderr = d.stderr();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Copies `src` into the FIFO until told to stop, then keeps the FIFO open without writing,
/// so the daemon's capture blocks in read() like a camera that stopped delivering.
struct FifoFeeder {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    /// The writing end, kept open after the feeding stops; dropped to let the reader see EOF.
    held: Arc<Mutex<Option<std::fs::File>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FifoFeeder {
    fn start(fifo: &Path, src: &Path) -> FifoFeeder {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let held = Arc::new(Mutex::new(None));
        let thread = {
            let (fifo, src) = (fifo.to_path_buf(), src.to_path_buf());
            let (stop, written, held) = (stop.clone(), written.clone(), held.clone());
            std::thread::spawn(move || {
                // Blocks until the daemon opens the FIFO for reading.
                let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
                    return;
                };
                // The smallest pipe buffer, so little is left to play out after a pause.
                // SAFETY: fcntl(2) on a descriptor we own.
                unsafe {
                    libc::fcntl(
                        std::os::fd::AsRawFd::as_raw_fd(&w),
                        libc::F_SETPIPE_SZ,
                        4096,
                    );
                }
                let mut data = Vec::new();
                std::fs::File::open(&src)
                    .unwrap()
                    .read_to_end(&mut data)
                    .unwrap();
                for chunk in data.chunks(4096) {
                    if stop.load(Ordering::SeqCst) || w.write_all(chunk).is_err() {
                        break;
                    }
                    written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
                *held.lock().unwrap() = Some(w);
            })
        };
        FifoFeeder {
            stop,
            written,
            held,
            thread: Some(thread),
        }
    }

    /// Stops writing (the writer stays open); returns once the feeding thread has stopped.
    fn pause(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Closes the writer: the reader sees EOF.
    fn close(&mut self) {
        self.pause();
        self.held.lock().unwrap().take();
    }
}

#[test]
fn watchdog_pings_stop_when_the_source_stalls() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    // 60 s of a small, noisy test pattern at 1 Mbit/s (so the buffers between the feeder and
    // the demuxer hold little time), made beforehand (fast) and fed into the FIFO at the pace
    // the daemon reads it (a file source is paced in real time).
    let clip = dir.path().join("clip.flv");
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x180:rate=25,noise=alls=40:allf=t")
        .args(["-t", "60", "-c:v", "libx264", "-preset", "ultrafast"])
        .args([
            "-g", "25", "-b:v", "1M", "-maxrate", "1M", "-bufsize", "500k",
        ])
        .args(["-f", "flv"])
        .arg(&clip)
        .status()
        .expect("run ffmpeg");
    assert!(made.success(), "ffmpeg could not make the clip");
    let fifo = dir.path().join("camera.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let cfg = dir.path().join("fifo.toml");
    std::fs::write(
        &cfg,
        format!(
            "[polyv]\nchannel_id = \"{CHANNEL}\"\npassword = \"{PASSWORD}\"\n\
             [video]\nsource = \"file\"\nfile = {:?}\nwidth = 320\nheight = 180\nfps = 25\n\
             bitrate_kbps = 300\npreset = \"ultrafast\"\n\
             [audio]\nsource = \"none\"\n[status]\nenabled = false\n",
            fifo.to_str().unwrap()
        ),
    )
    .unwrap();

    let l = Listener::new();
    let socket = l.path.to_str().unwrap().to_string();
    let url = nginx.url("fifo");
    let mut feeder = FifoFeeder::start(&fifo, &clip);
    let mut d = Daemon::start(
        &cfg,
        &["run", "--url", &url],
        &[
            ("NOTIFY_SOCKET", socket.as_str()),
            ("WATCHDOG_USEC", "1000000"),
        ],
        dir.path(),
    );
    let (ready, before) = l.wait_for(Duration::from_secs(30), |m| m == "READY=1\n");
    assert!(
        ready.is_some(),
        "no READY=1 within 30 s; got {before:?}\n{}",
        d.stderr()
    );
    let flowing = l.collect_until(Duration::from_secs(30), |seen| pings(seen) >= 3);
    assert!(
        pings(&flowing) >= 3,
        "frames flow: {flowing:?}\n{}",
        d.stderr()
    );

    // Stop the source; the writer stays open, so the capture blocks instead of seeing EOF.
    // What the FIFO and the demuxer still hold plays out (a few hundred ms at 1 Mbit/s), then
    // frames stop, and the daemon withholds its pings (and says so).
    feeder.pause();
    assert!(feeder.written.load(Ordering::SeqCst) > 0);
    assert!(
        d.wait_for_stderr(
            "withholding the systemd watchdog ping: no frames encoded",
            Duration::from_secs(30)
        ),
        "{}",
        d.stderr()
    );
    l.drain();
    let quiet = l.collect_for(Duration::from_secs(2));
    assert_eq!(
        pings(&quiet),
        0,
        "pings while the source is stalled: {quiet:?}"
    );

    // Let the blocked read see EOF so the daemon can stop.
    d.signal(libc::SIGTERM);
    feeder.close();
    let (stopping, _) = l.wait_for(Duration::from_secs(10), |m| m == "STOPPING=1\n");
    assert!(
        stopping.is_some(),
        "no STOPPING=1 after SIGTERM\n{}",
        d.stderr()
    );
    d.wait(Duration::from_secs(20));
}

// ---- Logging without journald -------------------------------------------------------------

/// A pipe for the child's stderr: (read end, write end, the write end's device and inode as
/// systemd would put them in JOURNAL_STREAM).
fn stderr_pipe() -> (std::fs::File, std::os::fd::OwnedFd, String) {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::MetadataExt;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2(2) fills the two descriptors we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (r, w) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    let dup = w.try_clone().unwrap();
    let meta = std::fs::File::from(dup).metadata().unwrap();
    (r, w, format!("{}:{}", meta.dev(), meta.ino()))
}

/// Runs a short broadcast with `JOURNAL_STREAM` set to `journal_stream(our stderr's dev:ino)`.
fn run_with_journal_stream(journal_stream: impl Fn(&str) -> String) -> (i32, String) {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_run_config(dir.path(), None, "");
    let url = nginx.url("logs");
    let (mut r, w, dev_ino) = stderr_pipe();
    let value = journal_stream(&dev_ino);
    let mut child = Command::new(env!("CARGO_BIN_EXE_polypush"))
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--test-pattern", "--url", &url, "--duration", "3"])
        .env("RUST_LOG", "info")
        .env("JOURNAL_STREAM", &value)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(w))
        .spawn()
        .expect("start polypush");
    // (The Command, and with it our copy of the write end, is gone: EOF when the child exits.)
    let mut stderr = String::new();
    r.read_to_string(&mut stderr).unwrap();
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, stderr)
}

fn assert_clean_stderr_log(code: i32, stderr: &str) {
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    let info = stderr.lines().filter(|l| l.contains(" INFO ")).count();
    assert!(info >= 2, "normal log lines on stderr:\n{stderr}");
    assert!(stderr.contains("publishing"), "{stderr}");
}

#[test]
fn logging_falls_back_to_stderr_with_a_bogus_journal_stream() {
    let (code, stderr) = run_with_journal_stream(|_| "bogus:value".to_string());
    assert_clean_stderr_log(code, &stderr);
    assert!(
        stderr.contains("logging to stderr: JOURNAL_STREAM=\"bogus:value\" is not our stderr"),
        "{stderr}"
    );
}

#[test]
fn logging_falls_back_to_stderr_when_journald_is_missing() {
    if Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("journald runs here: the fallback cannot be shown on this machine");
        return;
    }
    // JOURNAL_STREAM names our stderr, as under systemd, but no journald listens.
    let (code, stderr) = run_with_journal_stream(|dev_ino| dev_ino.to_string());
    assert_clean_stderr_log(code, &stderr);
    assert!(
        stderr.contains("logging to stderr: the journal socket is unavailable"),
        "{stderr}"
    );
}
