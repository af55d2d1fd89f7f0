//! The peer: a loopback listener served by a thread of its own that runs `rml_rtmp`'s handshake
//! and server session to accept `connect` and `publish` (or nothing, for raw streams), then
//! drains the socket and acknowledges as nginx-rtmp does; and the sender's socket and runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::net::{TcpSocket, TcpStream as TokioTcpStream};

use crate::measure::{pin_to, PEER_CPU};

// ---------------------------------------------------------------------------------------------
// The peer: rml_rtmp's server session for the setup, then a drain

/// rml_rtmp's handshake and server session, accepting `connect` and `publish`.
pub(super) struct MiniIngest {
    handshake: Option<Handshake>,
    session: Option<ServerSession>,
    publishing: bool,
}

impl MiniIngest {
    pub(super) fn new() -> Self {
        Self {
            handshake: Some(Handshake::new(PeerType::Server)),
            session: None,
            publishing: false,
        }
    }

    pub(super) fn input(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
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
pub(super) enum PeerKind {
    /// Accept an RTMP publish, then drain and ack.
    Rtmp,
    /// Drain only.
    Raw,
}

/// A loopback listener whose one connection is served by a new thread; the thread returns the
/// bytes it received.
pub(super) fn spawn_peer(kind: PeerKind) -> (SocketAddr, JoinHandle<u64>) {
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
pub(super) async fn raw_connect(addr: SocketAddr) -> TokioTcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_nodelay(true).expect("nodelay");
    socket
        .set_send_buffer_size(256 * 1024)
        .expect("send buffer");
    socket.connect(addr).await.expect("connect")
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}
