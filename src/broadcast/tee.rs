//! The tee: every packet the muxers make goes to the safety recording first, then to the
//! ring. The recording gets it before the ring can drop it, so an outage that makes the ring
//! drop video never touches the recording. Runs on the encode threads; never blocks (both
//! sides are bounded queues that count their own drops).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::media::MediaPacket;
use crate::record::Recorder;
use crate::ring::Ring;

/// Cheap to clone; every clone feeds the same ring and recorder.
#[derive(Clone)]
pub(super) struct Tee {
    ring: Ring,
    recorder: Option<Recorder>,
    /// The newest timestamp handed on, over every pipeline of the broadcast: a pipeline
    /// started after a reload begins after it.
    newest_dts: Arc<AtomicU64>,
}

impl Tee {
    pub(super) fn new(ring: Ring, recorder: Option<Recorder>) -> Self {
        Self {
            ring,
            recorder,
            newest_dts: Arc::default(),
        }
    }

    pub(super) fn push(&self, pkt: MediaPacket) {
        self.newest_dts.fetch_max(pkt.dts_ms, Ordering::Relaxed);
        if let Some(rec) = &self.recorder {
            rec.push(&pkt);
        }
        self.ring.push(pkt);
    }

    pub(super) fn newest_dts(&self) -> u64 {
        self.newest_dts.load(Ordering::Relaxed)
    }
}
