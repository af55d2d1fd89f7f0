//! Unit tests of the RTMP publish session, run against `rml_rtmp`'s server session in memory.

use super::*;
use crate::media::AudioInfo;
use proptest::prelude::*;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use std::sync::Arc;

/// rml_rtmp's server session behind its handshake, answering requests as told.
struct Server {
    handshake: Option<Handshake>,
    session: Option<ServerSession>,
    window_ack_size: u32,
    reject_connect: bool,
    reject_publish: Option<(&'static str, &'static str)>,
    events: Vec<ServerSessionEvent>,
    out: Vec<u8>,
}

impl Server {
    fn new() -> Self {
        Server {
            handshake: Some(Handshake::new(PeerType::Server)),
            session: None,
            window_ack_size: 1_073_741_824,
            reject_connect: false,
            reject_publish: None,
            events: Vec::new(),
            out: Vec::new(),
        }
    }

    fn input(&mut self, bytes: &[u8]) {
        if let Some(hs) = self.handshake.as_mut() {
            match hs.process_bytes(bytes).expect("server handshake") {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.out.extend(response_bytes);
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.out.extend(response_bytes);
                    self.handshake = None;
                    let mut config = ServerSessionConfig::new();
                    config.window_ack_size = self.window_ack_size;
                    let (session, results) = ServerSession::new(config).unwrap();
                    self.session = Some(session);
                    self.apply(results);
                    if !remaining_bytes.is_empty() {
                        self.input(&remaining_bytes);
                    }
                }
            }
            return;
        }
        let results = self.session.as_mut().unwrap().handle_input(bytes).unwrap();
        self.apply(results);
    }

    fn apply(&mut self, results: Vec<ServerSessionResult>) {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(p) => self.out.extend(p.bytes),
                ServerSessionResult::RaisedEvent(event) => self.on_event(event),
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    fn on_event(&mut self, event: ServerSessionEvent) {
        let session = self.session.as_mut().unwrap();
        let results = match &event {
            ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                if self.reject_connect {
                    session
                        .reject_request(
                            *request_id,
                            "NetConnection.Connect.Rejected",
                            "no such app",
                        )
                        .unwrap()
                } else {
                    session.accept_request(*request_id).unwrap()
                }
            }
            ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                match self.reject_publish {
                    Some((code, description)) => session
                        .reject_request(*request_id, code, description)
                        .unwrap(),
                    None => session.accept_request(*request_id).unwrap(),
                }
            }
            _ => Vec::new(),
        };
        self.events.push(event);
        self.apply(results);
    }
}

fn url() -> RtmpUrl {
    RtmpUrl::parse("rtmp://127.0.0.1/live/inst/16ad889b3d?auth_key=abc-123").unwrap()
}

/// Moves bytes both ways until neither side has anything to say.
fn exchange(client: &mut Session, server: &mut Server) -> Result<Vec<Event>, RtmpError> {
    let mut events = Vec::new();
    loop {
        let mut to_server = Vec::new();
        while let Some(b) = client.poll_transmit() {
            to_server.extend(b);
        }
        if !to_server.is_empty() {
            server.input(&to_server);
        }
        let to_client = std::mem::take(&mut server.out);
        if to_client.is_empty() && to_server.is_empty() {
            return Ok(events);
        }
        if !to_client.is_empty() {
            events.extend(client.handle_input(&to_client)?);
        }
    }
}

fn publishing(server: &mut Server, config: &SessionConfig) -> Session {
    let mut client = Session::new(&url(), config).unwrap();
    assert_eq!(client.phase(), Phase::Handshake);
    let events = exchange(&mut client, server).unwrap();
    assert!(client.is_publishing(), "events: {events:?}");
    assert_eq!(
        &events[..3],
        &[
            Event::HandshakeCompleted,
            Event::Connected,
            Event::PublishStarted
        ]
    );
    client
}

fn info() -> Arc<StreamInfo> {
    Arc::new(StreamInfo {
        width: 1280,
        height: 720,
        fps: 25.0,
        video_bitrate_kbps: 2000,
        audio: Some(AudioInfo {
            sample_rate: 48_000,
            channels: 2,
            bitrate_kbps: 128,
        }),
        encoder: "polypush test".into(),
    })
}

#[test]
fn handshake_connect_and_publish_against_rml_server() {
    let mut server = Server::new();
    let client = publishing(&mut server, &SessionConfig::default());
    let (app, key) = server
        .events
        .iter()
        .find_map(|e| match e {
            ServerSessionEvent::PublishStreamRequested {
                app_name,
                stream_key,
                ..
            } => Some((app_name.clone(), stream_key.clone())),
            _ => None,
        })
        .expect("publish requested");
    assert_eq!(app, "live/inst");
    assert_eq!(key, "16ad889b3d?auth_key=abc-123");
    let stats = client.stats();
    assert!(stats.bytes_sent > 1537 + 1536, "{stats:?}");
    assert!(stats.messages_sent >= 3, "{stats:?}");
}

#[test]
fn chunk_size_is_at_least_4096_once_connected() {
    let mut server = Server::new();
    let config = SessionConfig {
        chunk_size: 128,
        ..SessionConfig::default()
    };
    let mut client = publishing(&mut server, &config);
    let before = client.stats().bytes_sent;
    let frame = Bytes::from(vec![0x27; 20_000]);
    client
        .send(&MediaPacket::new(
            PacketKind::Video { keyframe: false },
            0,
            frame,
        ))
        .unwrap();
    // One full header, then a 1-byte header per 4096-byte chunk (128-byte chunks: 156).
    let overhead = client.stats().bytes_sent - before - 20_000;
    assert!(overhead <= 12 + 4 + 4, "{overhead} bytes of chunk headers");
    exchange(&mut client, &mut server).unwrap();
    assert!(server.events.iter().any(
        |e| matches!(e, ServerSessionEvent::VideoDataReceived { data, .. } if data.len() == 20_000)
    ));
}

#[test]
fn media_arrives_with_the_same_bytes_and_timestamps() {
    let mut server = Server::new();
    let mut client = publishing(&mut server, &SessionConfig::default());
    server.events.clear();

    let mut meta = MediaPacket::new(PacketKind::Metadata, 0, Bytes::new());
    meta.info = Some(info());
    let big_frame: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let packets = [
        meta,
        MediaPacket::new(
            PacketKind::VideoHeader,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64]),
        ),
        MediaPacket::new(
            PacketKind::AudioHeader,
            0,
            Bytes::from_static(&[0xaf, 0, 0x11, 0x90]),
        ),
        MediaPacket::new(
            PacketKind::Video { keyframe: true },
            40,
            Bytes::from(big_frame),
        ),
        MediaPacket::new(
            PacketKind::Audio,
            21,
            Bytes::from_static(&[0xaf, 1, 1, 2, 3]),
        ),
        // RTMP timestamps are 32-bit: the pipeline's u64 wraps.
        MediaPacket::new(
            PacketKind::Video { keyframe: false },
            (1 << 32) + 7,
            Bytes::from_static(&[0x27, 1, 0, 0, 0, 9]),
        ),
    ];
    for p in &packets {
        client.send(p).unwrap();
    }
    exchange(&mut client, &mut server).unwrap();

    let metadata = server
        .events
        .iter()
        .find_map(|e| match e {
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => Some(metadata.clone()),
            _ => None,
        })
        .expect("metadata");
    assert_eq!(metadata.video_width, Some(1280));
    assert_eq!(metadata.video_height, Some(720));
    assert_eq!(metadata.video_codec_id, Some(7));
    assert_eq!(metadata.audio_codec_id, Some(10));
    assert_eq!(metadata.audio_sample_rate, Some(48_000));
    assert_eq!(metadata.audio_channels, Some(2));
    assert_eq!(metadata.audio_is_stereo, Some(true));
    assert_eq!(metadata.encoder.as_deref(), Some("polypush test"));

    let media: Vec<(bool, Bytes, u32)> = server
        .events
        .iter()
        .filter_map(|e| match e {
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => Some((true, data.clone(), timestamp.value)),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => Some((false, data.clone(), timestamp.value)),
            _ => None,
        })
        .collect();
    let expected: Vec<(bool, Bytes, u32)> = packets[1..]
        .iter()
        .map(|p| {
            (
                p.kind.is_video() || p.kind == PacketKind::VideoHeader,
                p.body.clone(),
                (p.dts_ms & 0xFFFF_FFFF) as u32,
            )
        })
        .collect();
    assert_eq!(media, expected);
    let stats = client.stats();
    assert_eq!(stats.video_messages_sent, 3);
    assert_eq!(stats.audio_messages_sent, 2);
    assert_eq!(stats.metadata_messages_sent, 1);
}

/// The timestamps rml_rtmp's server session reports for what we sent.
fn received_timestamps(server: &Server) -> Vec<(bool, u32)> {
    server
        .events
        .iter()
        .filter_map(|e| match e {
            ServerSessionEvent::VideoDataReceived { timestamp, .. } => {
                Some((true, timestamp.value))
            }
            ServerSessionEvent::AudioDataReceived { timestamp, .. } => {
                Some((false, timestamp.value))
            }
            _ => None,
        })
        .collect()
}

/// Interleaved audio (every 21 ms, 200 bytes: one chunk) and video (every 40 ms, 9000
/// bytes: three chunks, so type-3 continuation chunks carry the extended timestamp too)
/// from `start` for `span` ms, as (is_video, pipeline dts) in send order.
fn av_from(start: u64, span: u64) -> Vec<(bool, u64)> {
    let mut out: Vec<(bool, u64)> = (0..span / 21)
        .map(|i| (false, start + i * 21))
        .chain((0..span / 40).map(|i| (true, start + i * 40)))
        .collect();
    out.sort_by_key(|&(v, t)| (t, v));
    out
}

fn send_av(client: &mut Session, server: &mut Server, packets: &[(bool, u64)]) {
    for (i, &(video, dts)) in packets.iter().enumerate() {
        let pkt = if video {
            let body = Bytes::from(vec![if i == 0 { 0x17 } else { 0x27 }; 9000]);
            MediaPacket::new(PacketKind::Video { keyframe: i == 0 }, dts, body)
        } else {
            MediaPacket::new(PacketKind::Audio, dts, Bytes::from(vec![0xaf; 200]))
        };
        client.send(&pkt).unwrap();
        // Small exchanges, so the server parses chunk by chunk as it would off a socket.
        if i % 7 == 0 {
            exchange(client, server).unwrap();
        }
    }
    exchange(client, server).unwrap();
}

/// Timestamps from 0xFFFFFF - 500 ms to past 0xFFFFFF: the first message on each chunk
/// stream has a type-0 header with an extended timestamp, later ones type-1/2 deltas;
/// rml_rtmp's server sees exactly the timestamps we sent.
#[test]
fn timestamps_across_the_24_bit_limit_use_extended_timestamps() {
    let mut server = Server::new();
    let config = SessionConfig {
        chunk_size: 4096,
        ..SessionConfig::default()
    };
    let mut client = publishing(&mut server, &config);
    server.events.clear();
    // Starts just below 0xFFFFFF, so the first (type 0) chunks of each stream have no
    // extended field and the deltas carry the stream across; then a fresh session that
    // starts past the limit, so type 0 headers and their continuation chunks carry one.
    let packets = av_from(0xFF_FFFF - 500, 1000);
    send_av(&mut client, &mut server, &packets);
    let expected: Vec<(bool, u32)> = packets.iter().map(|&(v, t)| (v, t as u32)).collect();
    assert_eq!(received_timestamps(&server), expected);

    // On the wire: a type-0 header whose 24-bit field is 0xFFFFFF, then the 32-bit
    // timestamp; each type-3 continuation chunk of the message repeats the 32-bit field
    // (as FFmpeg and nginx-rtmp expect).
    let mut server = Server::new();
    let mut client = publishing(&mut server, &config);
    let ts: u32 = 0xFF_FFFF + 5;
    let body = Bytes::from(vec![0x17; 9000]);
    client
        .send(&MediaPacket::new(
            PacketKind::Video { keyframe: true },
            u64::from(ts),
            body,
        ))
        .unwrap();
    let mut wire = Vec::new();
    while let Some(b) = client.poll_transmit() {
        wire.extend(b);
    }
    assert_eq!(wire[0], 0x04, "type 0 header on the video chunk stream");
    assert_eq!(&wire[1..4], &[0xff, 0xff, 0xff]);
    assert_eq!(&wire[4..7], &[0x00, 0x23, 0x28], "message length 9000");
    assert_eq!(wire[7], 9, "video message");
    assert_eq!(&wire[12..16], &ts.to_be_bytes());
    let second = 16 + 4096;
    assert_eq!(wire[second], 0xc4, "type 3 continuation");
    assert_eq!(&wire[second + 1..second + 5], &ts.to_be_bytes());
    assert_eq!(wire.len(), 16 + 9000 + 2 * 5);
    server.input(&wire);
    assert_eq!(received_timestamps(&server), [(true, ts)]);
    server.events.clear();
    let packets = av_from(u64::from(ts) + 40, 500);
    send_av(&mut client, &mut server, &packets);
    let expected: Vec<(bool, u32)> = packets.iter().map(|&(v, t)| (v, t as u32)).collect();
    assert_eq!(received_timestamps(&server), expected);
}

/// Around 2^32 ms (49.7 days) RTMP timestamps wrap; the deltas are computed with wrapping
/// arithmetic on both sides, so the server sees the pipeline time modulo 2^32, in order.
#[test]
fn timestamps_wrap_at_2_pow_32() {
    let mut server = Server::new();
    let mut client = publishing(&mut server, &SessionConfig::default());
    server.events.clear();
    let packets = av_from((1 << 32) - 500, 1000);
    send_av(&mut client, &mut server, &packets);
    let expected: Vec<(bool, u32)> = packets
        .iter()
        .map(|&(v, t)| (v, (t & 0xFFFF_FFFF) as u32))
        .collect();
    let got = received_timestamps(&server);
    assert_eq!(got, expected);
    assert!(got.iter().any(|&(_, t)| t > 0xFFFF_FF00));
    assert!(got.iter().any(|&(_, t)| t < 500));
}

#[test]
fn metadata_without_info_is_read_from_the_flv_body() {
    let body = rml_amf0::serialize(&vec![
        Amf0Value::Utf8String("onMetaData".into()),
        Amf0Value::Object(
            [
                ("width".to_string(), Amf0Value::Number(320.0)),
                ("height".to_string(), Amf0Value::Number(240.0)),
            ]
            .into_iter()
            .collect(),
        ),
    ])
    .unwrap();
    let mut server = Server::new();
    let mut client = publishing(&mut server, &SessionConfig::default());
    client
        .send(&MediaPacket::new(
            PacketKind::Metadata,
            0,
            Bytes::from(body),
        ))
        .unwrap();
    // Unreadable metadata is skipped, not fatal.
    client
        .send(&MediaPacket::new(
            PacketKind::Metadata,
            0,
            Bytes::from_static(b"junk"),
        ))
        .unwrap();
    exchange(&mut client, &mut server).unwrap();
    let widths: Vec<_> = server
        .events
        .iter()
        .filter_map(|e| match e {
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                Some((metadata.video_width, metadata.video_height))
            }
            _ => None,
        })
        .collect();
    assert_eq!(widths, [(Some(320), Some(240))]);
}

#[test]
fn peer_acknowledgements_are_counted() {
    let mut server = Server::new();
    let config = SessionConfig {
        window_ack_size: 10_000,
        ..SessionConfig::default()
    };
    let mut client = publishing(&mut server, &config);
    for i in 0..10 {
        let pkt = MediaPacket::new(
            PacketKind::Video { keyframe: i == 0 },
            i * 40,
            Bytes::from(vec![0x27; 3000]),
        );
        client.send(&pkt).unwrap();
        exchange(&mut client, &mut server).unwrap();
    }
    let stats = client.stats();
    assert!(stats.acks_received >= 1, "{stats:?}");
    assert!(stats.bytes_acked_by_peer >= 10_000, "{stats:?}");
    assert!(stats.bytes_acked_by_peer <= stats.bytes_sent, "{stats:?}");
}

#[test]
fn ack_sequence_numbers_wrap_and_restart() {
    let mut client = Session::new(&url(), &SessionConfig::default()).unwrap();
    client.on_ack(u32::MAX - 9);
    client.on_ack(10);
    assert_eq!(client.stats().bytes_acked_by_peer, u64::from(u32::MAX) + 11);
    client.on_ack(5); // counter restarted
    assert_eq!(client.stats().bytes_acked_by_peer, u64::from(u32::MAX) + 16);
}

#[test]
fn publish_rejected_by_the_server_is_an_error_with_code_and_description() {
    let mut server = Server::new();
    server.reject_publish = Some(("NetStream.Publish.BadName", "Already publishing"));
    let mut client = Session::new(&url(), &SessionConfig::default()).unwrap();
    let err = exchange(&mut client, &mut server).unwrap_err();
    match &err {
        RtmpError::PublishRejected {
            stream,
            code,
            description,
        } => {
            assert_eq!(stream, "16ad***");
            assert_eq!(code, "NetStream.Publish.BadName");
            assert_eq!(description, "Already publishing");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_transient());
    assert!(!err.to_string().contains("889b"), "{err}");
    assert!(client.is_closed());
    let err = client
        .send(&MediaPacket::new(PacketKind::Audio, 0, Bytes::new()))
        .unwrap_err();
    assert!(matches!(err, RtmpError::InvalidState { .. }), "{err:?}");
}

#[test]
fn connect_rejected_by_the_server_is_an_error() {
    let mut server = Server::new();
    server.reject_connect = true;
    let mut client = Session::new(&url(), &SessionConfig::default()).unwrap();
    let err = exchange(&mut client, &mut server).unwrap_err();
    match &err {
        RtmpError::ConnectRejected {
            app,
            code,
            description,
        } => {
            assert_eq!(app, "live/inst");
            assert_eq!(code, "NetConnection.Connect.Rejected");
            assert_eq!(description, "no such app");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn stop_sends_delete_stream() {
    let mut server = Server::new();
    let mut client = publishing(&mut server, &SessionConfig::default());
    client.stop().unwrap();
    assert!(client.is_closed());
    assert!(client.has_transmit());
    exchange(&mut client, &mut server).unwrap();
    assert!(server
        .events
        .iter()
        .any(|e| matches!(e, ServerSessionEvent::PublishStreamFinished { .. })));
    // Stopping again, or input after stopping, is harmless.
    client.stop().unwrap();
    assert!(client.handle_input(&[1, 2, 3]).unwrap().is_empty());
}

#[test]
fn status_classification() {
    let s = |level: &str, code: &str| Status {
        level: level.into(),
        code: code.into(),
        description: String::new(),
    };
    assert!(s("error", "NetStream.Publish.BadName").is_fatal());
    assert!(s("status", "NetStream.Publish.Unauthorized").is_fatal());
    assert!(s("_error", "whatever").is_fatal());
    assert!(!s("status", "NetStream.Publish.Start").is_fatal());
    assert!(!s("status", "NetStream.Record.Start").is_fatal());
    assert!(!s("error", "NetStream.Record.Failed").is_fatal());
}

#[test]
fn a_bad_handshake_is_an_error() {
    let mut client = Session::new(&url(), &SessionConfig::default()).unwrap();
    let err = client
        .handle_input(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        .unwrap_err();
    assert!(
        matches!(
            err,
            RtmpError::Protocol {
                phase: Phase::Handshake,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(client.is_closed());
}

/// A session that finished the handshake with a server that echoes C1 (the old-style
/// handshake rml_rtmp accepts), so the next input goes to the chunk parser.
fn after_handshake() -> Session {
    let mut client = Session::new(&url(), &SessionConfig::default()).unwrap();
    let c0c1 = client.poll_transmit().unwrap();
    let mut s0s1s2 = vec![3u8];
    s0s1s2.extend_from_slice(&[0u8; 1536]);
    s0s1s2.extend_from_slice(&c0c1[1..]);
    let events = client.handle_input(&s0s1s2).unwrap();
    assert_eq!(events, [Event::HandshakeCompleted]);
    assert_eq!(client.phase(), Phase::Connect);
    client
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_after_the_handshake_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..6)) {
        let mut client = after_handshake();
        for chunk in &chunks {
            if client.handle_input(chunk).is_err() {
                prop_assert!(client.is_closed());
                break;
            }
        }
    }

    #[test]
    fn garbage_handshakes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
        let mut client = Session::new(&url(), &SessionConfig::default()).unwrap();
        let _ = client.handle_input(&bytes);
    }
}
