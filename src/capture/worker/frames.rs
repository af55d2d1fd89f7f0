//! The path of a frame from decoder (or filter graph) to encoder: decode, stamp on the
//! pipeline clock, pace, offer. It is the same for every kind of source, so the read loop only
//! hands packets over, and the per-frame decisions (a frame's duration, a resync or a drop
//! worth a warning, how long to sleep) are made in one place.

use std::ops::DerefMut;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ffmpeg::{Rational, Rescale};
use ffmpeg_next as ffmpeg;

use super::open::Timing;
use super::{Feed, Flow, Source, SourceKind, Worker, EAGAIN_RETRY, PACE_SLICE};
use crate::capture::clock::ClockMode;
use crate::capture::queue::{CaptureCounters, Captured, FrameSender, Offer};
use crate::capture::{CaptureClock, CaptureError, Track};

const MICROS: Rational = Rational(1, 1_000_000);

/// Source time `us` of a clock running `ppm` fast, on the pipeline clock.
fn off_clock(us: i64, ppm: i32) -> i64 {
    if ppm == 0 {
        return us;
    }
    (i128::from(us) * 1_000_000 / (1_000_000 + i128::from(ppm))) as i64
}

/// How [`Worker::drain`] hands on each decoded frame.
type Deliver<F> =
    fn(&mut Worker, &mut Source, usize, &mut FrameSender<F>, F, &CaptureClock) -> Flow;

impl Worker {
    /// Sends a packet (or end of stream) to stream `si`'s decoder and delivers every frame.
    pub(super) fn decode_packet(
        &mut self,
        src: &mut Source,
        si: usize,
        packet: Option<&ffmpeg::Packet>,
        clock: &CaptureClock,
    ) -> Result<Flow, CaptureError> {
        let stream = &mut src.streams()[si];
        let sent = match packet {
            Some(p) => stream.decoder.send_packet(p),
            None => stream.decoder.send_eof(),
        };
        match sent {
            Ok(()) => {}
            Err(ffmpeg::Error::InvalidData) => return Ok(Flow::Continue),
            Err(ffmpeg::Error::Eof) => return Ok(Flow::Continue),
            Err(source) => {
                return Err(CaptureError::Decode {
                    what: self.what.clone(),
                    source,
                })
            }
        }
        match src.streams()[si].timing.track {
            Track::Video => {
                let mut sender = self
                    .outputs
                    .video
                    .take()
                    .expect("video stream implies a video output");
                let flow = self.drain(
                    src,
                    si,
                    &mut sender,
                    ffmpeg::frame::Video::empty,
                    Self::deliver,
                    clock,
                );
                self.outputs.video = Some(sender);
                flow
            }
            Track::Audio => {
                let mut sender = self
                    .outputs
                    .audio
                    .take()
                    .expect("audio stream implies an audio output");
                let flow = self.drain(
                    src,
                    si,
                    &mut sender,
                    ffmpeg::frame::Audio::empty,
                    Self::deliver_audio,
                    clock,
                );
                self.outputs.audio = Some(sender);
                flow
            }
        }
    }

    /// Receives every frame the decoder has and hands each to `deliver` ([`Self::deliver`],
    /// or [`Self::deliver_audio`] for decoded audio, which may gather small frames first).
    fn drain<F>(
        &mut self,
        src: &mut Source,
        si: usize,
        sender: &mut FrameSender<F>,
        new: fn() -> F,
        deliver: Deliver<F>,
        clock: &CaptureClock,
    ) -> Result<Flow, CaptureError>
    where
        F: DerefMut<Target = ffmpeg::Frame>,
    {
        loop {
            let mut frame = sender.empty_frame(new);
            match src.streams()[si].decoder.receive_frame(&mut frame) {
                Ok(()) => {}
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {
                    sender.discard_shell(frame);
                    return Ok(Flow::Continue);
                }
                Err(ffmpeg::Error::Eof) => {
                    sender.discard_shell(frame);
                    return Ok(Flow::Continue);
                }
                Err(source) => {
                    // A failed receive leaves the frame blank: keep the shell.
                    sender.discard_shell(frame);
                    return Err(CaptureError::Decode {
                        what: self.what.clone(),
                        source,
                    });
                }
            }
            if let Flow::Stop = deliver(self, src, si, sender, frame, clock) {
                return Ok(Flow::Stop);
            }
        }
    }

    /// Decoded audio from a demuxer: from a live device, frames under 10 ms (one tiny period
    /// per packet) are gathered into 20 ms frames first ([`super::batch`]); normal frames, and
    /// everything from a file, pass straight on.
    fn deliver_audio(
        &mut self,
        src: &mut Source,
        si: usize,
        sender: &mut FrameSender<ffmpeg::frame::Audio>,
        frame: ffmpeg::frame::Audio,
        clock: &CaptureClock,
    ) -> Flow {
        if !matches!(self.kind, SourceKind::Device) {
            // Files are decoded in whole codec frames, and a looped file's timeline is
            // rebuilt at each rewind from what was delivered: nothing to gather there.
            return self.deliver(src, si, sender, frame, clock);
        }
        let ready = self.audio_batch.push(si, frame, Instant::now(), sender);
        for (si, frame) in ready.into_iter().flatten() {
            if let Flow::Stop = self.deliver(src, si, sender, frame, clock) {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Hands on the audio gathered so far: all of it at the end of the input (`all`), or only
    /// a batch that has waited long enough while the device has nothing to read.
    pub(super) fn flush_audio(
        &mut self,
        src: &mut Source,
        all: bool,
        clock: &CaptureClock,
    ) -> Flow {
        let batch = if all {
            self.audio_batch.take()
        } else {
            self.audio_batch.take_stale(Instant::now())
        };
        // The batch first: taking the sender for nothing would drop it, and the track with it.
        let Some((si, frame)) = batch else {
            return Flow::Continue;
        };
        let Some(mut sender) = self.outputs.audio.take() else {
            return Flow::Continue;
        };
        let flow = self.deliver(src, si, &mut sender, frame, clock);
        self.outputs.audio = Some(sender);
        flow
    }

    /// A test pattern: takes the next frame from the graph and delivers it.
    pub(super) fn pull_graph(
        &mut self,
        src: &mut Source,
        clock: &CaptureClock,
    ) -> Result<Flow, CaptureError> {
        let Feed::Graph { timing, .. } = &src.feed else {
            unreachable!("called for graph sources only");
        };
        match timing.track {
            Track::Video => {
                let mut sender = self
                    .outputs
                    .video
                    .take()
                    .expect("a video graph implies a video output");
                let flow = self.pull(src, &mut sender, ffmpeg::frame::Video::empty, clock);
                self.outputs.video = Some(sender);
                flow
            }
            Track::Audio => {
                let mut sender = self
                    .outputs
                    .audio
                    .take()
                    .expect("an audio graph implies an audio output");
                let flow = self.pull(src, &mut sender, ffmpeg::frame::Audio::empty, clock);
                self.outputs.audio = Some(sender);
                flow
            }
        }
    }

    fn pull<F>(
        &mut self,
        src: &mut Source,
        sender: &mut FrameSender<F>,
        new: fn() -> F,
        clock: &CaptureClock,
    ) -> Result<Flow, CaptureError>
    where
        F: DerefMut<Target = ffmpeg::Frame>,
    {
        let Feed::Graph { graph, timing } = &mut src.feed else {
            unreachable!("called for graph sources only");
        };
        // Paced: wait for the next frame's time before drawing it, not after, so no drawn
        // picture sits here while the encoder holds the previous one (one buffer fewer).
        if let Some(due) = timing.next_due_us {
            if self.mapper.mode() == ClockMode::Paced && !self.sleep_until(due, clock) {
                return Ok(Flow::Stop);
            }
        }
        let mut frame = sender.empty_frame(new);
        match graph.receive(&mut frame) {
            Ok(()) => {
                src.last_data = Instant::now();
                Ok(self.deliver(src, 0, sender, frame, clock))
            }
            Err(ffmpeg::Error::Eof) => {
                sender.discard_shell(frame);
                tracing::info!(source = %self.what, "end of input");
                Ok(Flow::Stop)
            }
            Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {
                // Sources always have a frame; should one not, ask again shortly.
                sender.discard_shell(frame);
                std::thread::sleep(EAGAIN_RETRY);
                Ok(Flow::Continue)
            }
            Err(source) => {
                sender.discard_shell(frame);
                Err(CaptureError::Read {
                    what: self.what.clone(),
                    source,
                })
            }
        }
    }

    /// Stamps a frame of stream `si` (a graph has one), waits for its time (paced sources) and
    /// offers it to the encoder.
    fn deliver<F>(
        &mut self,
        src: &mut Source,
        si: usize,
        sender: &mut FrameSender<F>,
        frame: F,
        clock: &CaptureClock,
    ) -> Flow
    where
        F: DerefMut<Target = ffmpeg::Frame>,
    {
        let timing = match &mut src.feed {
            Feed::Graph { timing, .. } => timing,
            Feed::Demuxer { streams, .. } => &mut streams[si].timing,
        };
        let track = timing.track;
        let Some(pts_us) = self.timestamp(timing, sender.counters(), &frame, clock) else {
            sender.discard(frame);
            return Flow::Continue;
        };
        if self.mapper.mode() == ClockMode::Paced && !self.sleep_until(pts_us, clock) {
            sender.discard_shell(frame);
            return Flow::Stop;
        }
        match sender.offer(Captured { frame, pts_us }) {
            Offer::Queued => src.delivered += 1,
            Offer::Dropped => {
                src.delivered += 1;
                if let Some(held_back) = self.drop_log.allow(Instant::now()) {
                    let dropped = sender.counters().dropped.load(Ordering::Relaxed);
                    tracing::warn!(
                        source = %self.what,
                        %track,
                        dropped_total = dropped,
                        held_back,
                        "encoder is not keeping up: dropping captured frames"
                    );
                }
            }
            Offer::Disconnected => return Flow::Stop,
        }
        Flow::Continue
    }

    /// The frame's pipeline time, or `None` for a frame to drop (stamped before the pipeline
    /// started: a device's buffered frames).
    fn timestamp(
        &mut self,
        s: &mut Timing,
        counters: &CaptureCounters,
        frame: &ffmpeg::Frame,
        clock: &CaptureClock,
    ) -> Option<i64> {
        // SAFETY: reading plain fields of a decoded frame.
        let (nb_samples, sample_rate, pkt_duration) = unsafe {
            let f = &*frame.as_ptr();
            (
                i64::from(f.nb_samples),
                i64::from(f.sample_rate),
                f.pkt_duration,
            )
        };
        let duration_us = match s.track {
            Track::Audio if sample_rate > 0 => nb_samples * 1_000_000 / sample_rate,
            Track::Audio => 0,
            Track::Video if pkt_duration > 0 => pkt_duration.rescale(s.time_base, MICROS),
            Track::Video => s.default_duration_us,
        };
        let duration_us = off_clock(duration_us, s.clock_ppm);
        let mut looping = match &mut self.kind {
            SourceKind::File { looping } => looping.as_mut(),
            SourceKind::Device | SourceKind::TestPattern => None,
        };
        let source_us = match frame.timestamp() {
            Some(ts) => {
                let file_us = off_clock(ts.rescale(s.time_base, MICROS), s.clock_ppm);
                match looping.as_deref_mut() {
                    Some(looping) => looping.source_us(file_us),
                    None => file_us,
                }
            }
            // No timestamp at all: continue from the previous frame.
            None => s.last_end_us.unwrap_or(0),
        };
        s.last_end_us = Some(source_us + duration_us);
        if let Some(looping) = looping {
            looping.saw_frame(source_us + duration_us);
        }
        let track = s.track;

        let source_on_clock = match self.mapper.mode() {
            ClockMode::Wallclock => clock.from_wallclock_us(source_us),
            ClockMode::Paced => source_us,
        };
        let now_us = clock.now_us();
        if self.mapper.mode() == ClockMode::Wallclock && source_on_clock < 0 {
            return None;
        }
        let mapped = self.mapper.map(track, source_on_clock, duration_us, now_us);
        if mapped.resynced {
            counters.resyncs.fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = self.resync_log.allow(Instant::now()) {
                tracing::warn!(
                    source = %self.what,
                    %track,
                    lag_ms = (now_us - source_on_clock) / 1000,
                    held_back,
                    "source timestamps re-anchored to the pipeline clock"
                );
            }
        }
        s.next_due_us = Some(mapped.pts_us + duration_us);
        Some(mapped.pts_us)
    }

    /// Sleeps until pipeline time `target_us`; `false` if stopped meanwhile.
    fn sleep_until(&self, target_us: i64, clock: &CaptureClock) -> bool {
        loop {
            if self.signal.is_set() {
                return false;
            }
            let remaining = target_us - clock.now_us();
            if remaining <= 0 {
                return true;
            }
            std::thread::sleep(Duration::from_micros(remaining as u64).min(PACE_SLICE));
        }
    }
}
