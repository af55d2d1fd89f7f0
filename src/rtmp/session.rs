//! The sans-IO RTMP publisher: `rml_rtmp`'s client [`Handshake`] and [`ClientSession`] driven
//! through handshake → `connect` → `createStream` + `publish`, then media out.
//!
//! Bytes from the ingest go in through [`Session::handle_input`]; bytes for the ingest come out of
//! [`Session::poll_transmit`] in the order they must be written (RTMP chunk headers are
//! compressed against the previous chunk, so order is part of correctness). No sockets and no
//! clock here; the tokio driver in [`super::driver`] owns those, and tests run this against
//! `rml_rtmp`'s own server session in memory.
//!
//! `rml_rtmp` reports `onStatus` codes but drops their `level` and `description`, and reports a
//! `_error` answer to `publish` only as an unknown transaction. To turn rejections into errors
//! that say why, a second chunk deserializer watches the (small) inbound stream for `onStatus`
//! and `_error` commands; inbound traffic for a publisher is a few hundred bytes a second.

use std::collections::VecDeque;
use std::io::Cursor;

use bytes::Bytes;
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionError, ClientSessionEvent,
    ClientSessionResult, PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

use super::error::{Phase, RtmpError};
use super::url::RtmpUrl;
use crate::media::{MediaPacket, PacketKind, StreamInfo};

/// The smallest outbound chunk size we use: 128-byte chunks (the RTMP default) cost a header
/// every 128 bytes of video.
pub(super) const MIN_CHUNK_SIZE: u32 = 4096;

/// Protocol settings of one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Outbound chunk size announced after `connect` is accepted (`rml_rtmp` uses 128 until
    /// then). Raised to `MIN_CHUNK_SIZE` if lower.
    pub chunk_size: u32,
    /// Window acknowledgement size we announce. nginx-rtmp (and rml_rtmp) then acknowledge
    /// every this many bytes received, which feeds [`SessionStats::bytes_acked_by_peer`].
    /// 2.5 MB is what ffmpeg and OBS announce, so ingests are used to it; smaller values give
    /// finer-grained ack statistics.
    pub window_ack_size: u32,
    /// `flashVer` in `connect`. Ingests treat an `FMLE/3.0` string as "an encoder".
    pub flash_version: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            chunk_size: MIN_CHUNK_SIZE,
            window_ack_size: 2_500_000,
            flash_version: format!(
                "FMLE/3.0 (compatible; polypush/{})",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

/// Counters of one session, as a plain snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes handed out by [`Session::poll_transmit`], handshake included.
    pub bytes_sent: u64,
    /// Bytes passed to [`Session::handle_input`].
    pub bytes_received: u64,
    /// Bytes the ingest says it received, from its Acknowledgement messages (the sequence number
    /// is the peer's running byte count modulo 2^32; we extend it to 64 bits).
    pub bytes_acked_by_peer: u64,
    /// Acknowledgement messages received.
    pub acks_received: u64,
    /// RTMP messages produced, control and media.
    pub messages_sent: u64,
    pub video_messages_sent: u64,
    pub audio_messages_sent: u64,
    pub metadata_messages_sent: u64,
}

/// Something the caller may want to know about; errors are reported as `Err` instead.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// C2 is queued; `connect` follows.
    HandshakeCompleted,
    /// `connect` was accepted; `createStream` + `publish` are queued.
    Connected,
    /// `NetStream.Publish.Start`: media may be sent.
    PublishStarted,
    /// A status that is not an error, e.g. `NetStream.Record.Start`.
    Status(Status),
}

/// An `onStatus` (or `_error`) info object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub level: String,
    pub code: String,
    pub description: String,
}

impl Status {
    /// Whether the ingest is refusing or ending what we asked for. `_error` answers always are;
    /// `onStatus` is when its level is `error` (except recording trouble on the server side, which
    /// does not stop the stream) or when the code is a known rejection whatever the level.
    fn is_fatal(&self) -> bool {
        const REJECTIONS: [&str; 7] = [
            ".BadName",
            ".Unauthorized",
            ".Rejected",
            ".BadAuth",
            ".Denied",
            ".Forbidden",
            "NetConnection.Connect.Closed",
        ];
        self.level == "_error"
            || (self.level.eq_ignore_ascii_case("error")
                && !self.code.starts_with("NetStream.Record."))
            || REJECTIONS.iter().any(|r| self.code.ends_with(r))
    }
}

enum State {
    /// C0+C1 are queued; waiting for S0+S1+S2.
    Handshaking {
        handshake: Box<Handshake>,
        config: ClientSessionConfig,
    },
    /// Handshake done; `connect` (then `publish`) sent, waiting for the answer.
    Connecting {
        link: Link,
        step: Step,
    },
    Publishing {
        link: Link,
    },
    /// Stopped, rejected or failed. Inbound bytes are counted and ignored.
    Closed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    Publish,
}

/// What exists once the handshake is done.
struct Link {
    client: ClientSession,
    statuses: StatusWatcher,
}

/// One RTMP publish session; see the module docs.
pub struct Session {
    state: State,
    app: String,
    stream_key: String,
    masked_stream: String,
    transmit: VecDeque<Vec<u8>>,
    stats: SessionStats,
    last_ack_sequence: Option<u32>,
}

impl Session {
    /// Starts a session for `url`: C0+C1 are queued for [`Session::poll_transmit`].
    pub fn new(url: &RtmpUrl, config: &SessionConfig) -> Result<Session, RtmpError> {
        let mut client_config = ClientSessionConfig::new();
        client_config.chunk_size = config.chunk_size.max(MIN_CHUNK_SIZE);
        client_config.window_ack_size = config.window_ack_size;
        client_config.flash_version = config.flash_version.clone();
        client_config.tc_url = Some(url.tc_url().to_string());

        let mut handshake = Handshake::new(PeerType::Client);
        let c0c1 = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| protocol(Phase::Handshake, e))?;
        let mut session = Session {
            state: State::Handshaking {
                handshake: Box::new(handshake),
                config: client_config,
            },
            app: url.app().to_string(),
            stream_key: url.stream_key().to_string(),
            masked_stream: url.masked_stream(),
            transmit: VecDeque::new(),
            stats: SessionStats::default(),
            last_ack_sequence: None,
        };
        session.queue(c0c1, false);
        Ok(session)
    }

    /// The next bytes to write to the ingest, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Handshaking { .. } => Phase::Handshake,
            State::Connecting {
                step: Step::Connect,
                ..
            } => Phase::Connect,
            State::Connecting {
                step: Step::Publish,
                ..
            } => Phase::Publish,
            State::Publishing { .. } => Phase::Streaming,
            State::Closed => Phase::Closing,
        }
    }

    pub fn is_publishing(&self) -> bool {
        matches!(self.state, State::Publishing { .. })
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The stream name as it may appear in logs (`16ad***`).
    pub fn masked_stream(&self) -> &str {
        &self.masked_stream
    }

    /// Feeds bytes received from the ingest. Answers (handshake, acks, pongs, the next command)
    /// are queued for [`Session::poll_transmit`]. Any error closes the session.
    ///
    /// The bytes come from the network, and `rml_rtmp` parses them; a panic in there on hostile
    /// input is caught and reported as a protocol error, so a misbehaving ingest costs one
    /// session, not the daemon (the session is closed afterwards, so no state it left half
    /// updated is used again).
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<Vec<Event>, RtmpError> {
        self.stats.bytes_received += bytes.len() as u64;
        let mut events = Vec::new();
        let phase = self.phase();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.handle_input_inner(bytes, &mut events)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(protocol(
                phase,
                format!("rml_rtmp panicked on this input: {what}"),
            ))
        });
        if result.is_err() {
            self.state = State::Closed;
        }
        result.map(|()| events)
    }

    fn handle_input_inner(
        &mut self,
        bytes: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), RtmpError> {
        let rest = match &mut self.state {
            State::Closed => return Ok(()),
            State::Handshaking { handshake, config } => {
                match handshake
                    .process_bytes(bytes)
                    .map_err(|e| protocol(Phase::Handshake, e))?
                {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        self.queue(response_bytes, false);
                        return Ok(());
                    }
                    HandshakeProcessResult::Completed {
                        response_bytes,
                        remaining_bytes,
                    } => {
                        let config = config.clone();
                        self.queue(response_bytes, false);
                        let (mut client, initial) = ClientSession::new(config)
                            .map_err(|e| session_error(Phase::Handshake, e))?;
                        self.apply_results(initial, &mut None)?;
                        let connect = client
                            .request_connection(self.app.clone())
                            .map_err(|e| session_error(Phase::Connect, e))?;
                        self.state = State::Connecting {
                            link: Link {
                                client,
                                statuses: StatusWatcher::new(),
                            },
                            step: Step::Connect,
                        };
                        self.apply_results(vec![connect], &mut None)?;
                        events.push(Event::HandshakeCompleted);
                        remaining_bytes
                    }
                }
            }
            State::Connecting { .. } | State::Publishing { .. } => {
                return self.handle_rtmp(bytes, events);
            }
        };
        if rest.is_empty() {
            Ok(())
        } else {
            self.handle_rtmp(&rest, events)
        }
    }

    /// Input after the handshake: through `rml_rtmp`, and through the status watcher.
    fn handle_rtmp(&mut self, bytes: &[u8], events: &mut Vec<Event>) -> Result<(), RtmpError> {
        let phase = self.phase();
        let (results, statuses) = match &mut self.state {
            State::Connecting { link, .. } | State::Publishing { link } => {
                let statuses = link.statuses.observe(bytes);
                match link.client.handle_input(bytes) {
                    Ok(results) => (results, statuses),
                    Err(e) => {
                        // A rejection explains a failure better than the parse error after it.
                        if let Some(status) = statuses.into_iter().find(Status::is_fatal) {
                            return Err(self.rejection(phase, status));
                        }
                        return Err(session_error(phase, e));
                    }
                }
            }
            _ => return Ok(()),
        };
        let mut statuses = Some(statuses);
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => self.queue(packet.bytes, true),
                ClientSessionResult::RaisedEvent(event) => {
                    self.on_event(event, events, &mut statuses)?
                }
                // SetPeerBandwidth and other messages rml_rtmp has no use for: harmless.
                ClientSessionResult::UnhandleableMessageReceived(payload) => {
                    tracing::trace!(type_id = payload.type_id, "ignored RTMP message");
                }
            }
        }
        for status in statuses.into_iter().flatten() {
            if status.is_fatal() {
                return Err(self.rejection(self.phase(), status));
            }
            tracing::debug!(level = %status.level, code = %status.code, description = %status.description, "ingest status");
            events.push(Event::Status(status));
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        event: ClientSessionEvent,
        events: &mut Vec<Event>,
        statuses: &mut Option<Vec<Status>>,
    ) -> Result<(), RtmpError> {
        match event {
            ClientSessionEvent::ConnectionRequestAccepted => {
                let State::Connecting { link, step } = &mut self.state else {
                    return Err(protocol(self.phase(), "unexpected connect result"));
                };
                *step = Step::Publish;
                let publish = link
                    .client
                    .request_publishing(self.stream_key.clone(), PublishRequestType::Live)
                    .map_err(|e| session_error(Phase::Publish, e))?;
                self.apply_results(vec![publish], statuses)?;
                events.push(Event::Connected);
            }
            ClientSessionEvent::ConnectionRequestRejected { description } => {
                let status = statuses.as_mut().and_then(|s| {
                    s.iter()
                        .position(|s| s.level == "_error")
                        .map(|i| s.remove(i))
                });
                let (code, description) = match status {
                    Some(s) => (s.code, s.description),
                    None => ("NetConnection.Connect.Rejected".to_string(), description),
                };
                return Err(RtmpError::ConnectRejected {
                    app: self.app.clone(),
                    code,
                    description,
                });
            }
            ClientSessionEvent::PublishRequestAccepted => {
                let state = std::mem::replace(&mut self.state, State::Closed);
                let State::Connecting { link, .. } = state else {
                    self.state = state;
                    return Err(protocol(self.phase(), "unexpected NetStream.Publish.Start"));
                };
                self.state = State::Publishing { link };
                events.push(Event::PublishStarted);
            }
            ClientSessionEvent::AcknowledgementReceived { bytes_received } => {
                self.on_ack(bytes_received)
            }
            // Statuses, `_error` answers and other commands are read by the status watcher.
            other => tracing::trace!(event = ?other, "rml_rtmp event"),
        }
        Ok(())
    }

    fn on_ack(&mut self, sequence: u32) {
        self.stats.acks_received += 1;
        let delta = match self.last_ack_sequence {
            None => sequence,
            // Forward within half the sequence space: progress (possibly across the wrap).
            Some(last) if sequence.wrapping_sub(last) < 1 << 31 => sequence.wrapping_sub(last),
            // Backwards: the peer restarted its counter (nginx-rtmp does near 0xf0000000).
            Some(_) => sequence,
        };
        self.last_ack_sequence = Some(sequence);
        self.stats.bytes_acked_by_peer += u64::from(delta);
    }

    /// Serializes one media packet. `pkt.body` is passed on as `Bytes` (a reference count); the
    /// chunk serializer's copy into the outbound chunks is the only copy.
    pub fn send(&mut self, pkt: &MediaPacket) -> Result<(), RtmpError> {
        let State::Publishing { link } = &mut self.state else {
            return Err(RtmpError::InvalidState {
                op: "send media",
                phase: self.phase(),
            });
        };
        let timestamp = RtmpTimestamp::new((pkt.dts_ms & 0xFFFF_FFFF) as u32);
        let result = match pkt.kind {
            PacketKind::Metadata => {
                let Some(metadata) = metadata_for(pkt) else {
                    tracing::warn!(
                        bytes = pkt.body.len(),
                        "metadata packet without stream info or a readable onMetaData body: not sent"
                    );
                    return Ok(());
                };
                link.client.publish_metadata(&metadata)
            }
            PacketKind::VideoHeader | PacketKind::Video { .. } => {
                link.client
                    .publish_video_data(pkt.body.clone(), timestamp, false)
            }
            PacketKind::AudioHeader | PacketKind::Audio => {
                link.client
                    .publish_audio_data(pkt.body.clone(), timestamp, false)
            }
        };
        let result = result.map_err(|e| session_error(Phase::Streaming, e))?;
        let counter = match pkt.kind {
            PacketKind::Metadata => &mut self.stats.metadata_messages_sent,
            PacketKind::VideoHeader | PacketKind::Video { .. } => {
                &mut self.stats.video_messages_sent
            }
            PacketKind::AudioHeader | PacketKind::Audio => &mut self.stats.audio_messages_sent,
        };
        *counter += 1;
        self.apply_results([result], &mut None)
    }

    /// Ends publishing: `deleteStream` is queued if a stream was open, and the session closes.
    pub fn stop(&mut self) -> Result<(), RtmpError> {
        let state = std::mem::replace(&mut self.state, State::Closed);
        if let State::Publishing { mut link } | State::Connecting { mut link, .. } = state {
            let results = link
                .client
                .stop_publishing()
                .map_err(|e| session_error(Phase::Closing, e))?;
            self.apply_results(results, &mut None)?;
        }
        Ok(())
    }

    fn apply_results(
        &mut self,
        results: impl IntoIterator<Item = ClientSessionResult>,
        statuses: &mut Option<Vec<Status>>,
    ) -> Result<(), RtmpError> {
        let mut ignored = Vec::new();
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => self.queue(packet.bytes, true),
                ClientSessionResult::RaisedEvent(event) => {
                    self.on_event(event, &mut ignored, statuses)?
                }
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn queue(&mut self, bytes: Vec<u8>, is_message: bool) {
        if bytes.is_empty() {
            return;
        }
        self.stats.bytes_sent += bytes.len() as u64;
        if is_message {
            self.stats.messages_sent += 1;
        }
        self.transmit.push_back(bytes);
    }

    fn rejection(&self, phase: Phase, status: Status) -> RtmpError {
        if phase == Phase::Connect {
            RtmpError::ConnectRejected {
                app: self.app.clone(),
                code: status.code,
                description: status.description,
            }
        } else {
            RtmpError::PublishRejected {
                stream: self.masked_stream.clone(),
                code: status.code,
                description: status.description,
            }
        }
    }
}

/// `StreamInfo` when the packet carries it; otherwise whatever the FLV `onMetaData` body says.
fn metadata_for(pkt: &MediaPacket) -> Option<StreamMetadata> {
    match &pkt.info {
        Some(info) => Some(metadata_from_info(info)),
        None => metadata_from_body(&pkt.body),
    }
}

fn metadata_from_info(info: &StreamInfo) -> StreamMetadata {
    const FLV_CODEC_AVC: u32 = 7;
    const FLV_CODEC_AAC: u32 = 10;
    let mut m = StreamMetadata::new();
    m.video_width = Some(info.width);
    m.video_height = Some(info.height);
    m.video_codec_id = Some(FLV_CODEC_AVC);
    m.video_frame_rate = Some(info.fps as f32);
    m.video_bitrate_kbps = Some(info.video_bitrate_kbps);
    if let Some(audio) = &info.audio {
        m.audio_codec_id = Some(FLV_CODEC_AAC);
        m.audio_bitrate_kbps = Some(audio.bitrate_kbps);
        m.audio_sample_rate = Some(audio.sample_rate);
        m.audio_channels = Some(u32::from(audio.channels));
        m.audio_is_stereo = Some(audio.channels >= 2);
    }
    m.encoder = Some(info.encoder.clone());
    m
}

/// Reads an FLV script tag body: the string `onMetaData` followed by an object or ECMA array.
fn metadata_from_body(body: &Bytes) -> Option<StreamMetadata> {
    let values = rml_amf0::deserialize(&mut Cursor::new(&body[..])).ok()?;
    let mut values = values.into_iter();
    match values.next()? {
        Amf0Value::Utf8String(name) if name == "onMetaData" => {}
        _ => return None,
    }
    let properties = values.next()?.get_object_properties()?;
    let mut m = StreamMetadata::new();
    m.apply_metadata_values(properties);
    Some(m)
}

/// A second reader of the inbound chunk stream that keeps only `onStatus` and `_error` info
/// objects, which `rml_rtmp` reduces to a bare code (or nothing).
struct StatusWatcher {
    deserializer: Option<ChunkDeserializer>,
}

impl StatusWatcher {
    fn new() -> Self {
        Self {
            deserializer: Some(ChunkDeserializer::new()),
        }
    }

    fn observe(&mut self, bytes: &[u8]) -> Vec<Status> {
        let mut out = Vec::new();
        let Some(de) = self.deserializer.as_mut() else {
            return out;
        };
        let mut input = bytes;
        loop {
            let payload = match de.get_next_message(input) {
                Ok(Some(payload)) => payload,
                Ok(None) => break,
                // rml_rtmp's own deserializer sees the same bytes and reports the error.
                Err(_) => {
                    self.deserializer = None;
                    break;
                }
            };
            input = &[];
            match payload.to_rtmp_message() {
                Ok(RtmpMessage::SetChunkSize { size })
                    if de.set_max_chunk_size(size as usize).is_err() =>
                {
                    self.deserializer = None;
                    break;
                }
                Ok(RtmpMessage::Amf0Command {
                    command_name,
                    additional_arguments,
                    ..
                }) if command_name == "onStatus" || command_name == "_error" => {
                    out.push(status_from(&command_name, additional_arguments));
                }
                _ => {}
            }
        }
        out
    }
}

fn status_from(command: &str, arguments: Vec<Amf0Value>) -> Status {
    let mut properties = arguments
        .into_iter()
        .find_map(Amf0Value::get_object_properties)
        .unwrap_or_default();
    let mut text = |key: &str| match properties.remove(key) {
        Some(Amf0Value::Utf8String(s)) => s,
        _ => String::new(),
    };
    let code = text("code");
    let description = text("description");
    let level = if command == "_error" {
        "_error".to_string()
    } else {
        text("level")
    };
    Status {
        level,
        code: if code.is_empty() {
            format!("{command} without a code")
        } else {
            code
        },
        description,
    }
}

fn protocol(phase: Phase, detail: impl std::fmt::Display) -> RtmpError {
    RtmpError::Protocol {
        phase,
        detail: detail.to_string(),
    }
}

fn session_error(phase: Phase, e: ClientSessionError) -> RtmpError {
    match e {
        ClientSessionError::ChunkSerializationError(_)
        | ClientSessionError::MessageSerializationError(_) => RtmpError::Encode {
            detail: e.to_string(),
        },
        _ => protocol(phase, e),
    }
}

#[cfg(test)]
mod tests;
