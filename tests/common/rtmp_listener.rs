//! Test harness: FFmpeg's own RTMP server (`ffmpeg -listen 1 -i rtmp://…`), the second
//! ingest implementation the publisher is proven against besides nginx-rtmp. It accepts one
//! publisher, copies what it receives (`-c copy`) into a Matroska file with the timestamps
//! as they came off the wire (`-copyts`; Matroska, unlike FLV files, holds them past 2^31 ms),
//! and exits when the publisher hangs up.
//!
//! Readiness is read from `/proc/net/tcp` (a LISTEN socket on the port), never by connecting:
//! the listener takes exactly one connection, and a probe would be it. The child is stopped by
//! its own PID: [`RtmpListener::finish`] waits a bounded time for it to exit by itself, then
//! sends SIGINT (FFmpeg finishes the file), then SIGKILL; `Drop` kills it if a test panics.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::nginx::poll_until;

/// A running `ffmpeg -listen 1`; killed by its PID when dropped.
pub struct RtmpListener {
    child: Option<Child>,
    port: u16,
    out: PathBuf,
    log: PathBuf,
}

impl RtmpListener {
    /// Starts the listener on a free loopback port, recording into `dir/rec.mkv`, and waits
    /// until it listens.
    pub fn start(dir: &Path) -> RtmpListener {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let out = dir.join("rec.mkv");
        let log = dir.join("ffmpeg-listener.log");
        let child = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-v", "error", "-listen", "1"])
            // Generous: the publisher connects as soon as polypush's pipeline is up.
            .args(["-timeout", "60"])
            .arg("-i")
            .arg(format!("rtmp://127.0.0.1:{port}/live/x"))
            .args(["-c", "copy", "-copyts", "-f", "matroska", "-y"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run ffmpeg (scripts/install-deps.sh installs it)");
        let mut l = RtmpListener {
            child: Some(child),
            port,
            out,
            log,
        };
        let listening = poll_until(Duration::from_secs(10), || l.listening() || !l.running());
        assert!(
            listening && l.running(),
            "ffmpeg -listen did not listen on {port}: {}",
            l.log_text()
        );
        l
    }

    /// `rtmp://127.0.0.1:PORT/live/x`.
    pub fn url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live/x", self.port)
    }

    /// The recording (complete once [`RtmpListener::finish`] returned).
    pub fn recording(&self) -> &Path {
        &self.out
    }

    /// What FFmpeg printed (`-v error`).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// A LISTEN socket on 127.0.0.1:port in /proc/net/tcp.
    fn listening(&self) -> bool {
        let want = format!("0100007F:{:04X}", self.port);
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == want && f[3] == "0A"
            })
    }

    /// Waits up to `within` for FFmpeg to exit by itself (the publisher hung up), then asks
    /// it to finish (SIGINT) and, 5 s later, kills it. Its exit status, if it exited.
    pub fn finish(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if !poll_until(within, || matches!(child.try_wait(), Ok(Some(_)))) {
            // SAFETY: kill(2) on our own child, not reaped yet (try_wait saw it running).
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
            if !poll_until(Duration::from_secs(5), || {
                matches!(child.try_wait(), Ok(Some(_)))
            }) {
                let _ = child.kill();
            }
        }
        child.wait().ok()
    }
}

impl Drop for RtmpListener {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Per packet of `path`: (stream index, dts in ms), in file order, from ffprobe.
pub fn packet_dts_ms(path: &Path) -> Vec<(u32, i64)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,dts_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (i, t) = l.trim().split_once(',')?;
            let t: f64 = t.trim_end_matches(',').parse().ok()?;
            Some((i.parse().ok()?, (t * 1000.0).round() as i64))
        })
        .collect()
}
