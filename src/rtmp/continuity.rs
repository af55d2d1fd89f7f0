//! What keeps a stream continuous across RTMP sessions: which metadata and sequence headers the
//! current session has sent, and the last timestamp sent on each track over all sessions.
//! Pure (no I/O, no clock); the reconnecting sender in [`super::reconnect`] drives it.
//!
//! Every session starts with the ring's current headers ([`crate::ring::Ring::headers`]). The
//! ring also *queues* header packets as they are pushed, so the first session would otherwise
//! send the start-up headers twice (once from `headers()`, once popped). A popped header whose
//! body equals what this session already sent for its kind is skipped; a changed one (the
//! encoder was reconfigured) is sent, because the decoder needs it.
//!
//! Headers re-sent at the start of a later session keep RTMP timestamps monotonic on their
//! chunk stream: they are stamped with the last timestamp sent on their track (never earlier
//! than their own), so the next frame of that track is never older than its header.

use bytes::Bytes;

use crate::media::{MediaPacket, PacketKind};

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Continuity {
    /// Bodies of the metadata, video and audio headers sent on the current session.
    sent: [Option<Bytes>; 3],
    /// Highest DTS sent on each track, over all sessions (headers included).
    last_video: Option<u64>,
    last_audio: Option<u64>,
    /// Header packets skipped as duplicates, over all sessions.
    skipped: u64,
}

fn slot(kind: PacketKind) -> Option<usize> {
    match kind {
        PacketKind::Metadata => Some(0),
        PacketKind::VideoHeader => Some(1),
        PacketKind::AudioHeader => Some(2),
        PacketKind::Video { .. } | PacketKind::Audio => None,
    }
}

impl Continuity {
    /// Starts a new session with `headers` (the ring's current ones): returns them restamped,
    /// in order, and remembers them as sent on this session.
    pub(crate) fn start_session(&mut self, headers: Vec<MediaPacket>) -> Vec<MediaPacket> {
        self.sent = Default::default();
        headers
            .into_iter()
            .map(|mut h| {
                let floor = match h.kind {
                    PacketKind::VideoHeader => self.last_video,
                    PacketKind::AudioHeader => self.last_audio,
                    // Metadata (its own chunk stream) goes with the earlier track.
                    _ => match (self.last_video, self.last_audio) {
                        (Some(v), Some(a)) => Some(v.min(a)),
                        (v, a) => v.or(a),
                    },
                };
                h.dts_ms = h.dts_ms.max(floor.unwrap_or(0));
                self.admit(&h);
                h
            })
            .collect()
    }

    /// Whether a packet popped from the ring goes out on this session: false for a header
    /// identical to the one of its kind already sent. Records what is admitted.
    pub(crate) fn admit(&mut self, pkt: &MediaPacket) -> bool {
        if let Some(i) = slot(pkt.kind) {
            if self.sent[i].as_ref() == Some(&pkt.body) {
                self.skipped += 1;
                return false;
            }
            self.sent[i] = Some(pkt.body.clone());
        }
        let track = match pkt.kind {
            PacketKind::Video { .. } | PacketKind::VideoHeader => Some(&mut self.last_video),
            PacketKind::Audio | PacketKind::AudioHeader => Some(&mut self.last_audio),
            PacketKind::Metadata => None,
        };
        if let Some(last) = track {
            *last = Some(last.map_or(pkt.dts_ms, |l| l.max(pkt.dts_ms)));
        }
        true
    }

    /// Header packets skipped as duplicates so far.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(kind: PacketKind, dts: u64, body: &'static [u8]) -> MediaPacket {
        MediaPacket::new(kind, dts, Bytes::from_static(body))
    }

    fn headers() -> Vec<MediaPacket> {
        vec![
            pkt(PacketKind::Metadata, 0, b"meta"),
            pkt(PacketKind::VideoHeader, 0, b"avcc"),
            pkt(PacketKind::AudioHeader, 0, b"asc"),
        ]
    }

    #[test]
    fn the_first_session_does_not_send_the_start_up_headers_twice() {
        let mut c = Continuity::default();
        let sent = c.start_session(headers());
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|h| h.dts_ms == 0));
        // The same headers, popped from the ring: skipped.
        for h in headers() {
            assert!(!c.admit(&h), "{:?}", h.kind);
        }
        assert_eq!(c.skipped(), 3);
        assert!(c.admit(&pkt(PacketKind::Video { keyframe: true }, 40, b"idr")));
        assert!(c.admit(&pkt(PacketKind::Audio, 21, b"aac")));
    }

    #[test]
    fn a_changed_header_is_sent_and_then_deduplicated() {
        let mut c = Continuity::default();
        c.start_session(headers());
        let new_avcc = pkt(PacketKind::VideoHeader, 5000, b"avcc-720p");
        assert!(c.admit(&new_avcc));
        assert!(!c.admit(&new_avcc));
        // The old one again (the encoder switched back): a change, so sent.
        assert!(c.admit(&pkt(PacketKind::VideoHeader, 9000, b"avcc")));
    }

    #[test]
    fn a_new_session_resends_headers_stamped_at_the_last_timestamp_of_their_track() {
        let mut c = Continuity::default();
        c.start_session(headers());
        assert!(c.admit(&pkt(PacketKind::Video { keyframe: true }, 60_000, b"v")));
        assert!(c.admit(&pkt(PacketKind::Audio, 60_010, b"a")));
        assert!(c.admit(&pkt(PacketKind::Video { keyframe: false }, 60_040, b"v")));

        let sent = c.start_session(headers());
        let stamps: Vec<(PacketKind, u64)> = sent.iter().map(|h| (h.kind, h.dts_ms)).collect();
        assert_eq!(
            stamps,
            [
                (PacketKind::Metadata, 60_010),
                (PacketKind::VideoHeader, 60_040),
                (PacketKind::AudioHeader, 60_010),
            ]
        );
        // A new session: what the previous one sent no longer counts, but these do.
        assert!(!c.admit(&pkt(PacketKind::AudioHeader, 0, b"asc")));
        // Bodies are shared, not copied.
        assert_eq!(sent[1].body.as_ptr(), headers()[1].body.as_ptr());
    }

    #[test]
    fn a_header_newer_than_its_track_keeps_its_own_timestamp() {
        let mut c = Continuity::default();
        c.start_session(Vec::new());
        assert!(c.admit(&pkt(PacketKind::Audio, 100, b"a")));
        let sent = c.start_session(vec![pkt(PacketKind::VideoHeader, 7000, b"avcc")]);
        assert_eq!(sent[0].dts_ms, 7000);
        let sent = c.start_session(vec![pkt(PacketKind::Metadata, 0, b"m")]);
        assert_eq!(sent[0].dts_ms, 100);
    }
}
