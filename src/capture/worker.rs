//! The capture thread: open the source, then read packets, decode, timestamp, pace and hand
//! frames to the encode threads until stopped (test patterns skip the packets: their frames
//! come straight from a filter graph, see [`super::graph`]). A live device that fails is closed
//! and reopened here ([`super::reconnect`] has the schedule and the state the encoders see).
//!
//! This file keeps the thread's state and its read loop; the steps it takes live beside it:
//! [`open`] (how a source is opened), [`precheck`] (start-up errors that name what exists),
//! [`frames`] (decode, timestamp, pace, offer), [`batch`] (small audio frames gathered into
//! 20 ms ones before they are offered), [`looping`] (a looped file's timeline) and
//! [`outage`] (a live device lost and reopened).

mod batch;
mod frames;
mod looping;
mod open;
mod outage;
mod precheck;

use std::time::{Duration, Instant};

use ffmpeg::packet::Mut as _;
use ffmpeg_next as ffmpeg;

use super::clock::TimestampMapper;
use super::input::{OpenedInput, StopSignal};
use super::queue::CaptureCounters;
use super::reconnect::{Fault, LIVE_STALL};
use super::{CaptureClock, CaptureError, CaptureOutputs, SourceInfo, SourceSpec};
use crate::throttle::Throttle;
use looping::Looping;
use open::{open_source, plan, StreamState, Timing};
use outage::Device;

/// A device that delivers nothing for this long after being opened is reported as stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll interval while a non-blocking device has no data (`EAGAIN`).
const EAGAIN_RETRY: Duration = Duration::from_millis(2);
/// Longest single sleep while pacing or waiting to reopen, so a stop request is seen promptly.
const PACE_SLICE: Duration = Duration::from_millis(20);
/// How often a repeated warning (resyncs, drops) may reach the log.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What kind of source this is, which decides what its end of stream means and how it is
/// read. The test seam is not a kind: it wraps any of them (see [`Worker::fault`]).
enum SourceKind {
    /// A lavfi test pattern: paced, read from its filter graph; its end (should it have one)
    /// ends the input.
    TestPattern,
    /// A media file: paced; its end ends the input unless it is looped, and then the looping
    /// state carries its timeline across passes.
    File { looping: Option<Looping> },
    /// A V4L2 camera or ALSA microphone: opened non-blocking (`EAGAIN` is polled), end of
    /// stream is an error, and a failure mid-broadcast is a loss to wait out.
    Device,
}

/// Where an open source's frames come from.
enum Feed {
    /// A device or file: packets from the demuxer, decoded. The decoders are declared first so
    /// they are closed before the input whose packets they may reference.
    Demuxer {
        streams: Vec<StreamState>,
        input: OpenedInput,
    },
    /// A test pattern: frames straight from the filter graph's sink.
    Graph {
        graph: super::graph::SinkGraph,
        timing: Timing,
    },
}

/// An open input: what exists while the device is there.
pub(super) struct Source {
    feed: Feed,
    /// Frames handed on since this input was opened.
    delivered: u64,
    /// When the input last returned a packet (or was opened).
    last_data: Instant,
}

impl Source {
    /// The demuxed streams (none for a filter graph).
    fn streams(&mut self) -> &mut [StreamState] {
        match &mut self.feed {
            Feed::Demuxer { streams, .. } => streams,
            Feed::Graph { .. } => &mut [],
        }
    }
}

pub(super) struct Worker {
    what: String,
    /// The source without the test seam's wrapper; reopened from this.
    spec: SourceSpec,
    outputs: CaptureOutputs,
    mapper: TimestampMapper,
    signal: StopSignal,
    kind: SourceKind,
    /// The test seam (`SourceSpec::Faulty`): any kind of source, made to behave like a live
    /// device that is unplugged for a while.
    fault: Option<Fault>,
    resync_log: Throttle<Instant>,
    drop_log: Throttle<Instant>,
    /// Small decoded audio frames being gathered (see [`batch`]).
    audio_batch: batch::AudioBatcher,
}

/// Whether the read loop goes on after delivering frames.
enum Flow {
    Continue,
    Stop,
}

impl Worker {
    /// Opens the source for the requested outputs. Runs on the capture thread.
    pub(super) fn open(
        spec: &SourceSpec,
        outputs: CaptureOutputs,
        signal: StopSignal,
    ) -> Result<(Self, Source, SourceInfo), CaptureError> {
        let fault = match spec {
            SourceSpec::Faulty {
                fail_after,
                down_for,
                ..
            } => Some(Fault::new(*fail_after, *down_for)),
            _ => None,
        };
        let spec = spec.base().clone();
        let what = spec.describe();
        let plan = plan(&spec, true)?;
        let wants = (outputs.video.is_some(), outputs.audio.is_some());
        let (source, info) = open_source(&spec, &plan, wants, &signal)?;
        let mut mapper = TimestampMapper::new(plan.mode);
        if spec.is_sync_pattern() {
            mapper.pin_to_clock();
        }
        Ok((
            Self {
                what,
                spec,
                outputs,
                mapper,
                signal,
                kind: plan.kind,
                fault,
                resync_log: Throttle::new(LOG_INTERVAL),
                drop_log: Throttle::new(LOG_INTERVAL),
                audio_batch: batch::AudioBatcher::default(),
            },
            source,
            info,
        ))
    }

    /// A live device (or the test seam's stand-in for one): a failure mid-broadcast is a loss
    /// to wait out, not an error.
    fn live(&self) -> bool {
        matches!(self.kind, SourceKind::Device) || self.fault.is_some()
    }

    /// The read loop. Returns `Ok` on stop, on the encoders going away, or at the end of a
    /// file that is not looped. A live device that fails is reopened until it comes back.
    pub(super) fn run(mut self, source: Source, clock: CaptureClock) -> Result<(), CaptureError> {
        let mut packet = ffmpeg::Packet::empty();
        let mut device = Device::Live(source);
        loop {
            if self.signal.is_set() {
                if let Device::Live(src) | Device::Reopened(src, _) = device {
                    self.close(src);
                }
                return Ok(());
            }
            device = match device {
                Device::Live(mut src) => match self.step(&mut src, &mut packet, &clock) {
                    Ok(Flow::Continue) => Device::Live(src),
                    Ok(Flow::Stop) => {
                        self.close(src);
                        return Ok(());
                    }
                    Err(e) => {
                        let delivered = src.delivered;
                        self.close(src);
                        // A device that never delivered is a start-up problem: report it.
                        if !self.live() || delivered == 0 {
                            return Err(e);
                        }
                        Device::Down(self.lose(&e))
                    }
                },
                Device::Reopened(mut src, outage) => {
                    match self.step(&mut src, &mut packet, &clock) {
                        Ok(Flow::Continue) if src.delivered > 0 => {
                            self.back(&outage);
                            Device::Live(src)
                        }
                        Ok(Flow::Continue) => Device::Reopened(src, outage),
                        Ok(Flow::Stop) => {
                            self.close(src);
                            return Ok(());
                        }
                        Err(e) => {
                            self.close(src);
                            Device::Down(self.retry_later(outage, &e))
                        }
                    }
                }
                Device::Down(outage) => match self.reopen_when_due(outage) {
                    Some(device) => device,
                    None => return Ok(()),
                },
            };
        }
    }

    /// Reads one packet and delivers the frames it decodes to (a test pattern: one frame).
    fn step(
        &mut self,
        src: &mut Source,
        packet: &mut ffmpeg::Packet,
        clock: &CaptureClock,
    ) -> Result<Flow, CaptureError> {
        let injected = self
            .fault
            .as_mut()
            .and_then(|f| f.on_read(clock.now_us(), Instant::now()));
        let input = match (&mut src.feed, injected) {
            (_, Some(source)) => {
                return Err(CaptureError::Read {
                    what: self.what.clone(),
                    source,
                })
            }
            (Feed::Graph { .. }, None) => return self.pull_graph(src, clock),
            (Feed::Demuxer { input, .. }, None) => input,
        };
        match packet.read(&mut input.ctx) {
            Ok(()) => {
                src.last_data = Instant::now();
                let index = packet.stream();
                let flow = match src.streams().iter().position(|s| s.index == index) {
                    Some(si) => self.decode_packet(src, si, Some(packet), clock),
                    None => Ok(Flow::Continue),
                };
                // SAFETY: the packet is ours; unref releases its buffer (which may be a
                // device buffer) before the next read, whatever the decoder said.
                unsafe { ffmpeg::ffi::av_packet_unref(packet.as_mut_ptr()) };
                flow
            }
            Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {
                if let Flow::Stop = self.flush_audio(src, false, clock) {
                    return Ok(Flow::Stop);
                }
                let limit = if self.live() && src.delivered > 0 {
                    LIVE_STALL
                } else {
                    STALL_TIMEOUT
                };
                if src.last_data.elapsed() > limit {
                    return Err(CaptureError::Stalled {
                        what: self.what.clone(),
                        seconds: limit.as_secs(),
                    });
                }
                std::thread::sleep(EAGAIN_RETRY);
                Ok(Flow::Continue)
            }
            Err(ffmpeg::Error::Exit) => Ok(Flow::Stop),
            Err(ffmpeg::Error::InvalidData) => {
                tracing::debug!(source = %self.what, "skipping a corrupt packet");
                Ok(Flow::Continue)
            }
            Err(ffmpeg::Error::Eof) => {
                for si in 0..src.streams().len() {
                    if let Flow::Stop = self.decode_packet(src, si, None, clock)? {
                        return Ok(Flow::Stop);
                    }
                }
                if let Flow::Stop = self.flush_audio(src, true, clock) {
                    return Ok(Flow::Stop);
                }
                match &mut self.kind {
                    SourceKind::Device => Err(CaptureError::Ended {
                        what: self.what.clone(),
                    }),
                    SourceKind::File {
                        looping: Some(looping),
                    } => {
                        looping.rewind(src, &self.what)?;
                        Ok(Flow::Continue)
                    }
                    SourceKind::File { looping: None } | SourceKind::TestPattern => {
                        tracing::info!(source = %self.what, "end of input");
                        Ok(Flow::Stop)
                    }
                }
            }
            Err(source) => Err(CaptureError::Read {
                what: self.what.clone(),
                source,
            }),
        }
    }

    /// The counters of the tracks this thread feeds.
    fn counters(&self) -> impl Iterator<Item = &CaptureCounters> {
        let video = self.outputs.video.as_ref().map(|s| s.counters());
        let audio = self.outputs.audio.as_ref().map(|s| s.counters());
        video.into_iter().chain(audio)
    }
}
