//! Test harness: real processes on loopback. The Polyv simulator (`polyv-sim`) is started on a
//! free port and stopped by its own PID when the handle drops, also when a test fails.
#![allow(dead_code)]

pub mod daemon;
pub mod memory_ingest;
pub mod nginx;
pub mod rtmp_listener;
pub mod sender;
pub mod status;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[allow(unused_imports)] // not every test binary polls
pub use nginx::poll_until;

/// Waits for `child` to exit, at most `within` (a thread blocks in `wait`; nothing polls);
/// past it the child is killed by its PID. The exit status, if it exited by itself.
pub fn wait_bounded(
    mut child: std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(within) {
        Ok(status) => status.ok(),
        Err(_) => {
            // SAFETY: kill(2) on our own child, not reaped yet: the waiting thread reaps it
            // only after this signal ends it.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            let _ = rx.recv();
            None
        }
    }
}

pub const CHANNEL: &str = "153884";
pub const PASSWORD: &str = "461666";
pub const APP_ID: &str = "testapp001";
pub const APP_SECRET: &str = "testsecretabcdefghijklmnopqrstuv";

/// A running simulator; killed by PID on drop.
pub struct Sim {
    child: Child,
    pub base: String,
    pub addr: String,
}

impl Sim {
    pub fn start() -> Sim {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Sim {
        // A free port unless the caller names one.
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_polyv-sim"))
            .args(listen)
            .args(["--app", &format!("{APP_ID}:{APP_SECRET}")])
            .args(["--channel", &format!("{CHANNEL}:{PASSWORD}")])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start polyv-sim");
        // With TLS and `--plain-listen` the simulator prints two lines: the HTTPS listener
        // (`base`), then the plain one, which the control calls use (`addr`).
        let lines = if extra.contains(&"--plain-listen") {
            2
        } else {
            1
        };
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            for _ in 0..lines {
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let _ = tx.send(line);
            }
            // Keep draining so the simulator never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let mut urls = Vec::new();
        for _ in 0..lines {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(l) => urls.push(
                    l.trim()
                        .rsplit(' ')
                        .next()
                        .expect("listening line")
                        .to_string(),
                ),
                Err(_) => {
                    let _ = child.kill();
                    panic!("polyv-sim did not report its address within 20 s");
                }
            }
        }
        let base = urls[0].clone();
        let addr = urls
            .last()
            .unwrap()
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        Sim { child, base, addr }
    }

    /// A raw HTTP/1.1 request to the simulator: (status, body).
    pub fn http(&self, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
        http(&self.addr, method, path, content_type, body)
    }

    pub fn faults(&self, json: &str) {
        let (s, b) = self.http("POST", "/_sim/faults", "application/json", json);
        assert_eq!(s, 200, "setting faults failed: {b}");
    }

    pub fn set_channel(&self, id: &str, json: &str) {
        let (s, b) = self.http(
            "POST",
            &format!("/_sim/channels/{id}"),
            "application/json",
            json,
        );
        assert_eq!(s, 200, "setting channel failed: {b}");
    }

    /// Requests the simulator handled (excluding its control API).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        let (_, b) = self.http("GET", "/_sim/requests", "", "");
        serde_json::from_str(&b).expect("requests json")
    }

    pub fn reset_requests(&self) {
        self.http("POST", "/_sim/reset-requests", "", "");
    }

    pub fn channels(&self) -> Vec<serde_json::Value> {
        let (_, b) = self.http("GET", "/_sim/channels", "", "");
        serde_json::from_str(&b).expect("channels json")
    }

    pub fn channel(&self, id: &str) -> serde_json::Value {
        self.channels()
            .into_iter()
            .find(|c| c["channelId"].as_str() == Some(id) || c["channelId"] == id)
            .unwrap_or_else(|| panic!("channel {id} not in the simulator"))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http(addr: &str, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let ct = if content_type.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {content_type}\r\n")
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).to_string();
    let status: u16 = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Writes a config pointing every endpoint at `base` and returns its path.
pub fn write_config(dir: &Path, base: &str, extra_polyv: &str) -> PathBuf {
    let path = dir.join("polypush.toml");
    let text = format!(
        "[polyv]\nchannel_id = \"{CHANNEL}\"\npassword = \"{PASSWORD}\"\napp_id = \"{APP_ID}\"\napp_secret = \"{APP_SECRET}\"\ntimeout_s = 5\n{extra_polyv}\n[polyv.endpoints]\nlogin = \"{base}\"\nchannel = \"{base}\"\nchat = \"{base}\"\napi = \"{base}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The outcome of one `polypush` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs the real `polypush` binary with debug logging.
pub fn polypush(config: &Path, args: &[&str]) -> Run {
    polypush_env(config, args, &[])
}

pub fn polypush_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_polypush"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "debug")
        .env_remove("CREDENTIALS_DIRECTORY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run polypush");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One FLV tag of a recording: type (8 audio, 9 video, 18 script), timestamp, body.
pub struct FlvTag {
    pub kind: u8,
    pub ts_ms: u32,
    pub body: Vec<u8>,
}

impl FlvTag {
    /// Video: an AVC NALU packet (not the sequence header) of a keyframe.
    pub fn is_video_keyframe(&self) -> bool {
        self.kind == 9 && self.body.len() > 1 && self.body[0] >> 4 == 1 && self.body[1] == 1
    }
    /// Audio or video media, not a sequence header.
    pub fn is_media(&self) -> bool {
        (self.kind == 8 || self.kind == 9) && self.body.len() > 1 && self.body[1] == 1
    }
}

/// Parses an FLV file into its tags (header and PreviousTagSize checked).
pub fn flv_tags(path: &Path) -> Vec<FlvTag> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        data.len() >= 13 && &data[..3] == b"FLV",
        "{} is not FLV",
        path.display()
    );
    let mut pos = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize + 4;
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let kind = data[pos] & 0x1f;
        let size = u32::from_be_bytes([0, data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([data[pos + 7], data[pos + 4], data[pos + 5], data[pos + 6]]);
        let end = pos + 11 + size;
        if end + 4 > data.len() {
            break; // a truncated last tag (recording cut mid-write)
        }
        let prev =
            u32::from_be_bytes([data[end], data[end + 1], data[end + 2], data[end + 3]]) as usize;
        assert_eq!(prev, size + 11, "PreviousTagSize mismatch at byte {pos}");
        tags.push(FlvTag {
            kind,
            ts_ms: ts,
            body: data[pos + 11..end].to_vec(),
        });
        pos = end + 4;
    }
    tags
}

/// Writes a polypush config for a test-pattern broadcast (small, so two cores keep up).
pub fn write_run_config(dir: &Path, sim_base: Option<&str>, extra: &str) -> PathBuf {
    let path = dir.join("run.toml");
    let endpoints = match sim_base {
        Some(b) => format!("[polyv.endpoints]\nlogin = \"{b}\"\nchannel = \"{b}\"\nchat = \"{b}\"\napi = \"{b}\"\n"),
        None => String::new(),
    };
    let text = format!(
        "[polyv]\nchannel_id = \"{CHANNEL}\"\npassword = \"{PASSWORD}\"\n{endpoints}\n[video]\nsource = \"test\"\nwidth = 640\nheight = 360\nfps = 25\nbitrate_kbps = 800\npreset = \"ultrafast\"\n[audio]\nsource = \"test\"\n[status]\nlisten = \"127.0.0.1:0\"\n{extra}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}
