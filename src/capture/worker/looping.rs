//! A looped file's timeline. A file restarts at its end with timestamps that continue after
//! its longest track, so the pipeline sees one endless input; the bookkeeping that takes
//! (where the file starts, how far it reached, whether a pass delivered anything) means
//! nothing for any other source, so it lives here and only a looped file carries it.

use super::{CaptureError, Feed, Source};

/// Where a looped file is in its timeline (source microseconds).
#[derive(Default)]
pub(super) struct Looping {
    /// Added to the file's timestamps: the end of everything the earlier passes delivered.
    offset_us: i64,
    /// The file's earliest timestamp, learnt on the first pass.
    file_start_us: Option<i64>,
    /// The latest end (timestamp + duration, offset included) of any frame so far.
    max_end_us: i64,
    /// Frames seen since the last rewind: a pass with none would loop forever.
    frames_this_pass: u64,
}

impl Looping {
    /// The source time of a frame stamped `file_us` in the file.
    pub(super) fn source_us(&mut self, file_us: i64) -> i64 {
        if !matches!(self.file_start_us, Some(start) if start <= file_us) && self.offset_us == 0 {
            self.file_start_us = Some(file_us);
        }
        file_us + self.offset_us
    }

    /// A frame (stamped or not) that ends at source time `end_us` was seen.
    pub(super) fn saw_frame(&mut self, end_us: i64) {
        self.max_end_us = self.max_end_us.max(end_us);
        self.frames_this_pass += 1;
    }

    /// Seeks the file back to its start; timestamps continue after the longest track.
    pub(super) fn rewind(&mut self, src: &mut Source, what: &str) -> Result<(), CaptureError> {
        if self.frames_this_pass == 0 {
            return Err(CaptureError::Ended {
                what: what.to_string(),
            });
        }
        self.frames_this_pass = 0;
        let Feed::Demuxer { streams, input } = &mut src.feed else {
            return Err(CaptureError::Ended {
                what: what.to_string(),
            });
        };
        for s in streams.iter_mut() {
            s.decoder.flush();
        }
        self.offset_us = self.max_end_us - self.file_start_us.unwrap_or(0);
        input.ctx.seek(0, ..).map_err(|source| CaptureError::Read {
            what: format!("{what} (seeking back to the start to loop)"),
            source,
        })?;
        tracing::debug!(source = %what, offset_us = self.offset_us, "looping");
        Ok(())
    }
}
