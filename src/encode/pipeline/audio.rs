//! The audio encode thread: its loop ([`run_audio`]) over captured frames and, while the
//! microphone is reconnecting, silence up to the pipeline clock in 1024-sample frames.

use std::sync::atomic::Ordering;
use std::time::Duration;

use std::sync::mpsc::SyncSender;

use super::health::{self, HealthMsg};
use super::{Shared, IDLE_POLL};
use crate::capture::{Received, Track};
use crate::encode::{AudioEncoder, EncodeError};
use crate::media::EncodedPacket;

/// While filling, the audio encode thread tops up the silence this often (about a frame).
const SILENCE_TICK: Duration = Duration::from_millis(20);
/// Silence is filled up to this far behind the clock: a microphone's frames are stamped with
/// the time of their first sample, a period or so before they are read, so a returning
/// microphone lands just after the silence rather than before it.
const SILENCE_LAG_US: i64 = 10_000;

/// The audio encode loop: captured frames as they come; while the microphone is reconnecting,
/// silence up to the clock.
pub(super) fn run_audio<S>(
    mut encoder: AudioEncoder,
    rx: crate::capture::FrameReceiver<ffmpeg_next::frame::Audio>,
    levels: Option<SyncSender<HealthMsg>>,
    shared: &Shared,
    sink: &mut S,
) -> Result<(), EncodeError>
where
    S: FnMut(Track, &EncodedPacket<'_>),
{
    let mut on_packet = |packet: &EncodedPacket<'_>| {
        shared.count_packet(Track::Audio, packet);
        sink(Track::Audio, packet);
    };
    if levels.is_some() {
        encoder.meter_levels();
    }
    let mut filling = false;
    loop {
        let timeout = if filling { SILENCE_TICK } else { IDLE_POLL };
        match rx.recv_timeout(timeout) {
            Received::Frame(frame) => {
                if std::mem::take(&mut filling) {
                    tracing::debug!("audio: captured frames again, silence ends");
                }
                let result = encoder.encode(&frame, &mut on_packet);
                rx.recycle(frame.frame);
                if let Some(tx) = &levels {
                    encoder.take_levels(|b| health::offer(tx, HealthMsg::Audio(b)));
                }
                result?;
                shared.count_frame(Track::Audio, false);
                shared
                    .audio_encode
                    .corrections
                    .store(encoder.corrections(), Ordering::Relaxed);
                shared.audio_sync.store(&encoder.sync());
                continue;
            }
            Received::Timeout => {}
            Received::Closed => break,
        }
        let Some(clock) = shared.clock.get() else {
            continue;
        };
        if !filling && shared.audio_capture.state().is_reconnecting() {
            filling = true;
        }
        if filling {
            let frames = encoder.fill_silence(clock.now_us() - SILENCE_LAG_US, &mut on_packet)?;
            for _ in 0..frames {
                shared.count_frame(Track::Audio, true);
            }
        }
    }
    encoder.flush(&mut on_packet)
}
