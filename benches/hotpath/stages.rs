//! The measured stages, each alone (the encoder hand-over and packetizing, the ring, rml_rtmp's
//! serializer, our session, the socket), and the end-to-end pipelines through
//! `rtmp::Publisher`, with the per-step allocation attribution of the production pipeline.
//!
//! The production hand-over is the muxer's: the encoder's sink gets the payload borrowed from
//! FFmpeg's packet and `VideoMuxer`/`AudioMuxer` write the tag body from it in one pass
//! ([`Muxers`]). The hand-over before it copied the payload into `Bytes` first and packetized
//! that ([`stage_handover_copy`]); both are measured side by side.

use std::time::Duration;

use bytes::Bytes;
use polypush::flv::{AudioMuxer, AudioPacketizer, VideoMuxer, VideoPacketizer};
use polypush::media::{EncodedPacket, MediaPacket, PacketKind};
use polypush::ring::{Ring, RingConfig};
use polypush::rtmp::{connect, ConnectOptions, Publisher, RtmpUrl, Session, SessionConfig};
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::AsyncWriteExt;

use crate::measure::{measure, measure_async, AllocSnap, Measure, COUNTING};
use crate::media::{Media, Unit};
use crate::peer::{raw_connect, runtime, spawn_peer, MiniIngest, PeerKind};

// ---------------------------------------------------------------------------------------------
// Stages

pub(super) fn kind_of(unit: &Unit) -> PacketKind {
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
pub(super) struct Packetizers {
    video: VideoPacketizer,
    audio: AudioPacketizer,
}

impl Packetizers {
    pub(super) fn packetize(&mut self, unit: &Unit, pass: u64, period: u64) -> MediaPacket {
        let body = if unit.video {
            self.video.packetize(&unit.data, unit.keyframe, 0, true)
        } else {
            self.audio.packetize(&unit.data)
        };
        MediaPacket::new(kind_of(unit), pass * period + unit.dts_ms, body)
    }
}

/// The production encode sinks' muxers: a tag body made in one pass from the payload the
/// encoder lends (here a unit's bytes, as FFmpeg's `AVPacket` would).
pub(super) struct Muxers {
    video: VideoMuxer,
    audio: AudioMuxer,
}

impl Muxers {
    pub(super) fn new(media: &Media) -> Self {
        Self {
            video: VideoMuxer::new(&media.video_params, 0),
            audio: AudioMuxer::new(0),
        }
    }

    pub(super) fn mux(&mut self, unit: &Unit, pass: u64, period: u64) -> MediaPacket {
        let dts = (pass * period + unit.dts_ms) as i64;
        let pkt = EncodedPacket {
            data: &unit.data,
            pts_ms: dts,
            dts_ms: dts,
            keyframe: unit.keyframe,
            reopened: None,
        };
        if unit.video {
            let mut out = None;
            self.video
                .mux(&pkt, &mut |p| out = Some(p))
                .expect("the bench's video muxes");
            out.expect("a video packet")
        } else {
            self.audio.mux(&pkt)
        }
    }
}

/// The encoder hand-over now: the muxer reads the borrowed payload (previous body dropped).
pub(super) fn stage_handover_mux(media: &Media, secs: Duration) -> Measure {
    let mut m = Muxers::new(media);
    measure(secs, |pass| {
        let mut payload = 0;
        for unit in &media.units {
            let pkt = m.mux(unit, pass, media.period_ms);
            payload += pkt.body.len() as u64;
        }
        (media.units.len() as u64, payload, 0)
    })
}

/// The encoder hand-over before this change: the payload copied out of FFmpeg's packet into a
/// `Bytes` (`Bytes::copy_from_slice`), then packetized from that (previous body dropped).
pub(super) fn stage_handover_copy(media: &Media, secs: Duration) -> Measure {
    let mut p = Packetizers::default();
    measure(secs, |pass| {
        let mut payload = 0;
        for unit in &media.units {
            let owned = Unit {
                data: Bytes::copy_from_slice(&unit.data),
                ..*unit
            };
            let pkt = p.packetize(&owned, pass, media.period_ms);
            payload += pkt.body.len() as u64;
        }
        (media.units.len() as u64, payload, 0)
    })
}

pub(super) fn stage_packetize(media: &Media, secs: Duration) -> Measure {
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
pub(super) fn stage_packetize_held(
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
pub(super) fn bodies(media: &Media) -> Vec<Bytes> {
    let mut p = Packetizers::default();
    media
        .units
        .iter()
        .map(|u| Bytes::copy_from_slice(&p.packetize(u, 0, 0).body))
        .collect()
}

pub(super) fn stage_ring(media: &Media, bodies: &[Bytes], secs: Duration) -> Measure {
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
pub(super) fn stage_rml_serializer(media: &Media, bodies: &[Bytes], secs: Duration) -> Measure {
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
pub(super) fn stage_session(media: &Media, bodies: &[Bytes], secs: Duration) -> Measure {
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

/// Pre-serialized RTMP chunks (rml_rtmp's) written to the socket: the socket's share alone.
pub(super) fn stage_socket(media: &Media, bodies: &[Bytes], secs: Duration) -> (Measure, u64) {
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
pub(super) fn stage_pipeline_no_rtmp(media: &Media, secs: Duration) -> (Measure, u64) {
    let (addr, peer) = spawn_peer(PeerKind::Raw);
    let m = runtime().block_on(async {
        let mut sock = raw_connect(addr).await;
        let ring = Ring::new(RingConfig::default());
        let mut p = Muxers::new(media);
        let m = measure_async!(secs, |pass| {
            let mut payload = 0;
            for unit in &media.units {
                ring.push(p.mux(unit, pass, media.period_ms));
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
pub(super) enum SendMode {
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
pub(super) struct Attribution {
    pub(super) packets: [u64; 2],
    pub(super) packetize: [AllocSnap; 2],
    pub(super) push: [AllocSnap; 2],
    pub(super) pop: [AllocSnap; 2],
    pub(super) service: [AllocSnap; 2],
    pub(super) publish: [AllocSnap; 2],
    pub(super) drop: [AllocSnap; 2],
    /// rml_rtmp's chunk serializer on the same packet (a separate serializer, outside the
    /// publisher): the part of `publish` that is rml_rtmp's.
    pub(super) rml: [AllocSnap; 2],
}

/// The whole path: mux (from the borrowed payload) → ring → `rtmp::Publisher` (our `Session` over rml_rtmp's
/// `ClientSession`) → loopback socket → the peer thread. Returns the measurement, bytes the
/// peer received, bytes the publisher wrote, and (for `Queue`) a per-step attribution pass.
pub(super) fn pipeline(
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
        let mut p = Muxers::new(media);
        let m = {
            measure_async!(secs, |pass| {
                let before = publisher.written_bytes();
                let mut payload = 0;
                for unit in &media.units {
                    ring.push(p.mux(unit, pass, media.period_ms));
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
                let pkt = p.mux(unit, pass, media.period_ms);
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
