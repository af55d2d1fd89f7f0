//! Reference only, not production code: what the proposed fixes would cost (an own media
//! chunker into a reused buffer instead of rml_rtmp's serializer, packetizers that reserve
//! slabs).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use polypush::flv::{nal_unit_type, split_annexb};
use polypush::media::PacketKind;
use polypush::ring::{Ring, RingConfig};
use tokio::io::AsyncWriteExt;

use crate::measure::{measure, measure_async, Measure};
use crate::media::{Media, Unit};
use crate::peer::{raw_connect, runtime, spawn_peer, PeerKind};
use crate::stages::{kind_of, Packetizers};

// ---------------------------------------------------------------------------------------------
// Reference: what the proposed fixes would cost (not our production code)

/// A media-only RTMP chunker into one reused buffer: a type-1 header (same chunk stream and
/// message stream as the previous message) and type-3 continuation headers every 4096 bytes.
/// This is what replacing rml_rtmp's `ChunkSerializer` for audio/video would cost per packet.
struct MediaChunker {
    buf: Vec<u8>,
}

impl MediaChunker {
    const CHUNK: usize = 4096;

    fn chunk(&mut self, kind: PacketKind, delta_ms: u32, body: &[u8]) -> &[u8] {
        let (csid, type_id) = if kind.is_video() { (4u8, 9u8) } else { (5, 8) };
        self.buf.clear();
        self.buf.reserve(12 + body.len() + body.len() / Self::CHUNK);
        self.buf.push(0x40 | csid); // fmt 1
        self.buf
            .extend_from_slice(&delta_ms.min(0xFF_FFFF).to_be_bytes()[1..]);
        self.buf
            .extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        self.buf.push(type_id);
        for (i, c) in body.chunks(Self::CHUNK).enumerate() {
            if i > 0 {
                self.buf.push(0xC0 | csid); // fmt 3
            }
            self.buf.extend_from_slice(c);
        }
        &self.buf
    }
}

/// The packetizers' rewrite (same output bytes as `VideoPacketizer` with
/// `strip_parameter_sets` and `AudioPacketizer`) with one change: when the buffer lacks room,
/// reserve a whole slab, not one body, so that while earlier bodies are still held, later ones
/// are carved from the same allocation. Reference for the proposed fix only.
#[derive(Default)]
pub(super) struct SlabPacketizer {
    video: BytesMut,
    audio: BytesMut,
    /// NAL ranges of the current access unit, reused (as `VideoPacketizer` does).
    nals: Vec<(usize, usize)>,
}

impl SlabPacketizer {
    const VIDEO_SLAB: usize = 64 * 1024;
    const AUDIO_SLAB: usize = 16 * 1024;

    fn reserve(buf: &mut BytesMut, need: usize, slab: usize) {
        if buf.capacity() - buf.len() < need {
            buf.reserve(need.max(slab));
        }
    }

    pub(super) fn packetize(&mut self, unit: &Unit) -> Bytes {
        if unit.video {
            let au = &unit.data[..];
            let base = au.as_ptr() as usize;
            self.nals.clear();
            let mut need = 5;
            for nal in split_annexb(au).filter(|n| !matches!(nal_unit_type(n), 7..=9)) {
                let start = nal.as_ptr() as usize - base;
                self.nals.push((start, start + nal.len()));
                need += 4 + nal.len();
            }
            Self::reserve(&mut self.video, need, Self::VIDEO_SLAB);
            let b = &mut self.video;
            b.put_slice(&[if unit.keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0]);
            for &(start, end) in &self.nals {
                b.put_u32((end - start) as u32);
                b.put_slice(&au[start..end]);
            }
            b.split().freeze()
        } else {
            let header = if unit.data[1] & 1 == 1 { 7 } else { 9 };
            let frame = &unit.data[header..];
            Self::reserve(&mut self.audio, 2 + frame.len(), Self::AUDIO_SLAB);
            self.audio.put_slice(&[0xaf, 1]);
            self.audio.put_slice(frame);
            self.audio.split().freeze()
        }
    }
}

/// The proposed chunker alone, like [`crate::stages::stage_rml_serializer`] (reference only).
pub(super) fn reference_own_chunker(media: &Media, bodies: &[Bytes], secs: Duration) -> Measure {
    let mut chunker = MediaChunker {
        buf: Vec::with_capacity(1 << 20),
    };
    let mut last = [0u64; 2];
    measure(secs, |pass| {
        let (mut payload, mut wire) = (0, 0);
        for (unit, body) in media.units.iter().zip(bodies) {
            let dts = pass * media.period_ms + unit.dts_ms;
            let k = usize::from(!unit.video);
            let delta = dts.saturating_sub(last[k]) as u32;
            last[k] = dts;
            wire += chunker.chunk(kind_of(unit), delta, body).len() as u64;
            payload += body.len() as u64;
        }
        (media.units.len() as u64, payload, wire)
    })
}

/// The pipeline with the proposed chunker instead of rml_rtmp's serializer (reference only).
pub(super) fn reference_pipeline_own_chunker(media: &Media, secs: Duration) -> (Measure, u64) {
    let (addr, peer) = spawn_peer(PeerKind::Raw);
    let m = runtime().block_on(async {
        let mut sock = raw_connect(addr).await;
        let ring = Ring::new(RingConfig::default());
        let mut p = Packetizers::default();
        let mut chunker = MediaChunker {
            buf: Vec::with_capacity(1 << 20),
        };
        let mut last = [0u64; 2];
        let m = measure_async!(secs, |pass| {
            let (mut payload, mut wire) = (0, 0);
            for unit in &media.units {
                ring.push(p.packetize(unit, pass, media.period_ms));
                let pkt = ring.try_pop().expect("just pushed");
                let k = usize::from(!unit.video);
                let delta = pkt.dts_ms.saturating_sub(last[k]) as u32;
                last[k] = pkt.dts_ms;
                let bytes = chunker.chunk(pkt.kind, delta, &pkt.body);
                sock.write_all(bytes).await.expect("write");
                payload += pkt.body.len() as u64;
                wire += bytes.len() as u64;
            }
            (media.units.len() as u64, payload, wire)
        });
        sock.shutdown().await.expect("shutdown");
        m
    });
    (m, peer.join().expect("peer"))
}
