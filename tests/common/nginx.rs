//! Test harness: a real nginx with the RTMP module (Debian `nginx` + `libnginx-mod-rtmp`) on a
//! loopback port, in its own temporary prefix, recording every published stream.
//!
//! nginx runs in the foreground without a master process (`daemon off; master_process off;`), so
//! the child we spawn *is* the server: it is stopped by its own PID, in `Drop` too, which runs
//! when a test panics. Nothing here looks processes up by name.
//!
//! Applications (what nginx-rtmp 1.2 actually does, found by trying):
//! - `live`: `live on; record all;` into `rec/`, one `STREAM.flv` per stream name. A second
//!   publisher of a name in use gets `onStatus` `NetStream.Publish.BadName` ("Already
//!   publishing"), the only publish error status nginx-rtmp sends. Beware: that rejected attempt
//!   still truncates the first publisher's recording (the record module opens the file before
//!   the live module refuses), so do not record-check a stream you also provoke BadName on.
//! - `deny`: `on_publish` pointing at a closed loopback port. The hook fails, and nginx drops
//!   the connection in answer to `publish`, before any status: how ingests refuse a bad key
//!   without saying why.
//! - `denyrule`: `deny publish all;`. nginx first answers `NetStream.Publish.Start` (the live
//!   module runs before the access check) and then drops the connection, so the publisher sees
//!   an accepted publish followed by a hang-up.
//! - Any other application: nginx drops the connection in answer to `connect`.
//!
//! [`Nginx::start_with`] takes [`NginxOptions`] for the reconnect tests: keep one recording per
//! session (`record_unique on`: `STREAM-<unix seconds>.flv`, so sessions must start at least a
//! second apart), drop a publisher that sent nothing for a while (`drop_idle_publisher`, how an
//! ingest forgets a publisher whose link died), and run inside a network namespace on an address
//! there (`ip netns exec NS nginx …`; `ip netns exec` execs nginx, so the child PID is nginx's).
//!
//! RTMPS ([`Nginx::start_tls`]): the same nginx also runs its `stream` module (Debian
//! `libnginx-mod-stream`) as a TLS terminator on a second port, proxying the plain bytes to the
//! RTMP port, which is how RTMPS ingests are commonly built. Its certificate is made for each
//! nginx with the `openssl` CLI: a throw-away CA ([`Nginx::tls_ca`], for `SSL_CERT_FILE`) and a
//! leaf for `localhost` with the SANs `DNS:localhost` and `IP:127.0.0.1`.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run nginx; the default is what [`Nginx::start`] does.
#[derive(Debug, Clone, Default)]
pub struct NginxOptions {
    /// `record_unique on`: every session gets its own recording ([`Nginx::recordings`]).
    pub record_unique: bool,
    /// `drop_idle_publisher` for the `live` application.
    pub drop_idle_publisher: Option<Duration>,
    /// Run inside this network namespace (the caller created it).
    pub netns: Option<String>,
    /// Listen here instead of 127.0.0.1 (an address inside `netns`).
    pub listen: Option<Ipv4Addr>,
}

/// A running nginx-rtmp; killed by its PID when dropped.
pub struct Nginx {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    /// The TLS terminator's port ([`Nginx::start_tls`]); `None` without one.
    tls_port: Option<u16>,
    opts: NginxOptions,
    /// See [`Nginx::start_with_on_publish`].
    on_publish: Option<String>,
}

impl Nginx {
    /// Starts nginx on a free loopback port and waits until it accepts connections. Retries
    /// with another port if the one picked was taken in the meantime.
    pub fn start() -> Nginx {
        Self::start_with(NginxOptions::default())
    }

    /// Like [`Nginx::start`], with options.
    pub fn start_with(opts: NginxOptions) -> Nginx {
        Self::start_inner(opts, false, None)
    }

    /// Like [`Nginx::start`], and also accepting RTMPS: a TLS terminator (nginx `stream` with
    /// `ssl`) on [`Nginx::tls_port`] in front of the RTMP port, with a certificate from a CA
    /// made for this instance ([`Nginx::tls_ca`]).
    pub fn start_tls() -> Nginx {
        Self::start_inner(NginxOptions::default(), true, None)
    }

    /// Like [`Nginx::start_with`], with `on_publish URL` in the `live` application, e.g. the
    /// simulator's `http://127.0.0.1:PORT/_sim/on_publish` (plain HTTP: nginx-rtmp has no TLS
    /// client). Before accepting a publisher nginx posts a form (`app, flashver, swfurl,
    /// tcurl, pageurl, addr, clientid, call=publish, name, type`, then the publish URL's query
    /// string appended as is, so `…/live/KEY?auth_key=K` arrives as `name=KEY` plus
    /// `auth_key=K`), and drops the publisher unless the answer is 2xx.
    pub fn start_with_on_publish(opts: NginxOptions, on_publish: &str) -> Nginx {
        Self::start_inner(opts, false, Some(on_publish.to_owned()))
    }

    fn start_inner(opts: NginxOptions, tls: bool, on_publish: Option<String>) -> Nginx {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: install nginx and libnginx-mod-rtmp (scripts/install-deps.sh)"
        );
        let dir = tempfile::Builder::new()
            .prefix("polypush-nginx-")
            .tempdir()
            .expect("temp dir for nginx");
        std::fs::create_dir_all(dir.path().join("rec")).unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        if tls {
            assert!(
                Path::new(STREAM_MODULE).exists(),
                "{STREAM_MODULE} is missing: install libnginx-mod-stream (scripts/install-deps.sh)"
            );
            make_certificates(&dir.path().join("tls"));
        }
        let mut nginx = Nginx {
            child: None,
            dir,
            port: 0,
            tls_port: None,
            opts,
            on_publish,
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            nginx.port = free_port();
            if tls {
                nginx.tls_port = Some(loop {
                    let p = free_port();
                    if p != nginx.port {
                        break p;
                    }
                });
            }
            match nginx.spawn() {
                Ok(()) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start after 5 attempts: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The listening address (loopback unless [`NginxOptions::listen`] says otherwise).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip(), self.port))
    }

    fn ip(&self) -> Ipv4Addr {
        self.opts.listen.unwrap_or(Ipv4Addr::LOCALHOST)
    }

    /// The PID of the running nginx, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `rtmp://127.0.0.1:PORT/live/STREAM`: published streams are recorded.
    pub fn url(&self, stream: &str) -> String {
        self.url_in("live", stream)
    }

    /// The RTMPS (TLS terminator) port; needs [`Nginx::start_tls`].
    pub fn tls_port(&self) -> u16 {
        self.tls_port
            .expect("nginx was started without TLS: use Nginx::start_tls")
    }

    /// `rtmps://HOST:TLS_PORT/live/STREAM`, recorded like [`Nginx::url`]. `host` is what the
    /// client checks the certificate against: `localhost` or `127.0.0.1` match it.
    pub fn rtmps_url(&self, host: &str, stream: &str) -> String {
        format!("rtmps://{host}:{}/live/{stream}", self.tls_port())
    }

    /// The PEM file of the CA that signed the TLS terminator's certificate (for
    /// `SSL_CERT_FILE`); needs [`Nginx::start_tls`].
    pub fn tls_ca(&self) -> PathBuf {
        assert!(
            self.tls_port.is_some(),
            "nginx was started without TLS: use Nginx::start_tls"
        );
        self.dir.path().join("tls/ca.pem")
    }

    /// An application that refuses every publisher by dropping the connection at `publish`.
    pub fn url_denied(&self, stream: &str) -> String {
        self.url_in("deny", stream)
    }

    /// An application with `deny publish all`: `NetStream.Publish.Start`, then a hang-up.
    pub fn url_denied_after_start(&self, stream: &str) -> String {
        self.url_in("denyrule", stream)
    }

    /// Any application, including ones that do not exist (nginx drops the connection then too).
    pub fn url_in(&self, app: &str, stream: &str) -> String {
        format!("rtmp://{}:{}/{app}/{stream}", self.ip(), self.port)
    }

    /// Where nginx records `stream` (`record_unique off`, so the name is fixed). The file grows
    /// while the stream is published and is complete once nginx has closed the publisher's
    /// connection.
    pub fn recording(&self, stream: &str) -> PathBuf {
        self.dir.path().join("rec").join(format!("{stream}.flv"))
    }

    /// With `record_unique`: the recordings of `stream`, oldest first (one per session).
    pub fn recordings(&self, stream: &str) -> Vec<PathBuf> {
        let prefix = format!("{stream}-");
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("rec"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".flv"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // STREAM-<unix seconds>.flv: same number of digits, so the names sort by time.
        files.sort();
        files
    }

    /// How many times nginx logged a publish of `stream` (one per accepted session).
    pub fn publish_count(&self, stream: &str) -> usize {
        let needle = format!("publish: name='{stream}'");
        self.error_log().matches(&needle).count()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }

    /// Waits until the error log contains `needle`; false at the deadline.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        poll_until(within, || self.error_log().contains(needle))
    }

    /// Waits until nginx logged `n` publishes of `stream`; false at the deadline.
    pub fn wait_for_publishes(&self, stream: &str, n: usize, within: Duration) -> bool {
        poll_until(within, || self.publish_count(stream) >= n)
    }

    /// Stops nginx (SIGTERM, then SIGKILL after 5 s) and waits for it to exit. The port stays
    /// reserved for [`Nginx::start_again`] only by convention: nothing else should grab it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the PID of our own child, which we have not waited for yet, so
        // the PID cannot have been reused.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        if !poll_until(STOP_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_)))) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts nginx again on the same port, e.g. after [`Nginx::stop`] in a reconnect test.
    pub fn start_again(&mut self) {
        self.stop();
        let mut last_error = String::new();
        // The old listening socket may linger for a moment after the process exits.
        let started = poll_until(Duration::from_secs(1), || match self.spawn() {
            Ok(()) => true,
            Err(e) => {
                last_error = e;
                false
            }
        });
        if started {
            return;
        }
        panic!(
            "nginx did not start again on port {}: {last_error}",
            self.port
        );
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let conf = dir.join("nginx.conf");
        let text = config(
            dir,
            self.ip(),
            self.port,
            self.tls_port,
            &self.opts,
            self.on_publish.as_deref(),
        );
        std::fs::write(&conf, text).unwrap();
        let log = dir.join("logs/error.log");
        // A file, not a pipe: nobody drains a pipe while the tests run.
        let stderr_path = dir.join("logs/stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut command = match &self.opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nginx"]);
                c
            }
            None => Command::new("nginx"),
        };
        let mut child = command
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run nginx: {e}"))?;
        let mut exited = None;
        let mut addrs = vec![self.addr()];
        if let Some(port) = self.tls_port {
            addrs.push(SocketAddr::from((self.ip(), port)));
        }
        let ready = poll_until(READY_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            addrs
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
        });
        if let Some(status) = exited {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            return Err(format!(
                "nginx exited with {status}: {stderr}\n{}",
                self.error_log()
            ));
        }
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "nginx did not accept connections on {} within {READY_TIMEOUT:?}\n{}",
                self.addr(),
                self.error_log()
            ));
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn config(
    dir: &Path,
    ip: Ipv4Addr,
    port: u16,
    tls_port: Option<u16>,
    opts: &NginxOptions,
    on_publish: Option<&str>,
) -> String {
    let dir = dir.display();
    let unique = if opts.record_unique { "on" } else { "off" };
    let idle = opts
        .drop_idle_publisher
        .map(|d| format!("drop_idle_publisher {}ms;", d.as_millis()))
        .unwrap_or_default();
    // The TLS terminator: plain TCP proxying after the handshake, so nginx-rtmp sees an
    // ordinary RTMP client (from 127.0.0.1).
    let (stream_module, stream) = match tls_port {
        Some(tls_port) => (
            format!("load_module {STREAM_MODULE};"),
            format!(
                r#"stream {{
    server {{
        listen {ip}:{tls_port} ssl;
        ssl_certificate {dir}/tls/localhost.pem;
        ssl_certificate_key {dir}/tls/localhost.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        proxy_pass {ip}:{port};
    }}
}}"#
            ),
        ),
        None => (String::new(), String::new()),
    };
    let on_publish = on_publish
        .map(|url| format!("on_publish {url};"))
        .unwrap_or_default();
    format!(
        r#"load_module {MODULE};
{stream_module}
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log info;
events {{
    worker_connections 128;
}}
rtmp {{
    server {{
        listen {ip}:{port};
        chunk_size 4096;
        application live {{
            live on;
            record all;
            record_path {dir}/rec;
            record_unique {unique};
            {idle}
            {on_publish}
        }}
        application deny {{
            live on;
            # Port 1 (tcpmux) on loopback: nothing listens, so the hook fails at once.
            on_publish http://127.0.0.1:1/refuse;
        }}
        application denyrule {{
            live on;
            deny publish all;
        }}
    }}
}}
{stream}
"#
    )
}

/// Makes, in `dir`, a test CA (`ca.pem`) and a certificate for `localhost` signed by it
/// (`localhost.pem`, key `localhost.key`) with the SANs `DNS:localhost` and `IP:127.0.0.1`.
/// P-256 keys: quick to make, and what rustls's `ring` provider verifies.
fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[req]\nprompt = no\ndistinguished_name = dn\nx509_extensions = ca\n\
         [dn]\nCN = polypush test CA\n\
         [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("localhost.ext"),
        "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(
        dir,
        &format!("req -x509 -config ca.cnf -days 2 {key} -keyout ca.key -out ca.pem"),
    );
    openssl(
        dir,
        &format!("req -new -subj /CN=localhost {key} -keyout localhost.key -out localhost.csr"),
    );
    openssl(
        dir,
        "x509 -req -in localhost.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 \
         -extfile localhost.ext -out localhost.pem",
    );
}

/// Runs `openssl ARGS` (split at spaces) in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `ffprobe -show_streams -show_format` as JSON.
pub fn ffprobe_json(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

/// What `ffmpeg -v error` says while decoding the whole file; empty for a clean file.
pub fn decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        text.push_str(&format!("\nffmpeg exited with {}", out.status));
    }
    text
}

/// A tiny FLV reader: the 9-byte header, then (11-byte tag header, body, 4-byte previous tag
/// size) until the end. Bodies are slices of one `Bytes`, as the pipeline's would be.
pub fn read_flv(
    path: &Path,
    info: std::sync::Arc<polypush::media::StreamInfo>,
) -> Vec<polypush::media::MediaPacket> {
    let data = bytes::Bytes::from(std::fs::read(path).expect("read FLV"));
    assert_eq!(&data[..3], b"FLV", "not an FLV file");
    let be = |b: &[u8]| b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
    let mut pos = be(&data[5..9]) + 4;
    let mut packets = Vec::new();
    while pos + 11 <= data.len() {
        let tag_type = data[pos] & 0x1f;
        let size = be(&data[pos + 1..pos + 4]);
        let ts = be(&data[pos + 4..pos + 7]) | (usize::from(data[pos + 7]) << 24);
        let body = data.slice(pos + 11..pos + 11 + size);
        pos += 11 + size + 4;
        let kind = match tag_type {
            18 => polypush::media::PacketKind::Metadata,
            9 if body[0] & 0x0f == 7 && body[1] == 0 => polypush::media::PacketKind::VideoHeader,
            9 => polypush::media::PacketKind::Video {
                keyframe: body[0] >> 4 == 1,
            },
            8 if body[0] >> 4 == 10 && body[1] == 0 => polypush::media::PacketKind::AudioHeader,
            8 => polypush::media::PacketKind::Audio,
            _ => continue,
        };
        let mut pkt = polypush::media::MediaPacket::new(kind, ts as u64, body);
        if kind == polypush::media::PacketKind::Metadata {
            pkt.info = Some(info.clone());
        }
        packets.push(pkt);
    }
    packets
}

/// Polls `cond` (on the real clock: an outside process, a file) until it holds or `within`
/// passes; whether it held. The one polling loop of the harness.
pub fn poll_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
