//! What the ring reports: drop reasons, per-reason counters and the [`RingStats`] snapshot the
//! bitrate controller and `/metrics` read. Plain `Copy` data, so reading stats never holds the
//! ring's lock longer than a memcpy.

/// Why packets were dropped. Each reason is a separate metric label because each points at a
/// different cause: a slow uplink (`QueueFull`, `QueueDelay`, `GopTail`), a reconnect
/// (`Reconnect`), or an uplink dead for so long that even audio no longer fits
/// (`AudioOverflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Video dropped because the queue would exceed `max_bytes`.
    QueueFull,
    /// Video dropped because the queue would span more than `max_delay_ms`.
    QueueDelay,
    /// Incoming video of a GOP whose earlier frames were dropped: it could not be decoded.
    GopTail,
    /// Video discarded so that a new RTMP session starts with a keyframe.
    Reconnect,
    /// Audio dropped at the hard cap (4× the bounds) because the uplink stayed dead.
    AudioOverflow,
}

impl DropReason {
    /// Every reason, in the order [`DropCounts`] stores them.
    pub const ALL: [DropReason; 5] = [
        Self::QueueFull,
        Self::QueueDelay,
        Self::GopTail,
        Self::Reconnect,
        Self::AudioOverflow,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::QueueDelay => "queue_delay",
            Self::GopTail => "gop_tail",
            Self::Reconnect => "reconnect",
            Self::AudioOverflow => "audio_overflow",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Packets and body bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCount {
    pub packets: u64,
    pub bytes: u64,
}

/// Drops per [`DropReason`], monotonic since the ring was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    by_reason: [DropCount; 5],
}

impl DropCounts {
    pub fn get(&self, reason: DropReason) -> DropCount {
        self.by_reason[reason.index()]
    }

    /// The sum over all reasons.
    pub fn total(&self) -> DropCount {
        self.by_reason
            .iter()
            .fold(DropCount::default(), |acc, c| DropCount {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            })
    }

    /// `(reason, count)` for every reason, zeros included, for exporting metrics.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, DropCount)> + '_ {
        DropReason::ALL.into_iter().map(|r| (r, self.get(r)))
    }

    pub fn is_empty(&self) -> bool {
        self.by_reason.iter().all(|c| c.packets == 0)
    }

    pub(super) fn add(&mut self, reason: DropReason, bytes: usize) {
        let c = &mut self.by_reason[reason.index()];
        c.packets += 1;
        c.bytes += bytes as u64;
    }
}

/// A snapshot of the ring, taken under its lock at one instant.
///
/// Totals only grow; at every snapshot `pushed = popped + dropped + queued` holds, in packets
/// and in bytes (body bytes). Pushes after [`super::Ring::close`] are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    pub queued_packets: usize,
    pub queued_bytes: usize,
    /// Newest minus oldest queued DTS over audio and video (headers carry no meaningful time),
    /// 0 when empty: how far the sender lags behind the encoders.
    pub queued_delay_ms: u64,
    pub pushed_packets: u64,
    pub pushed_bytes: u64,
    pub popped_packets: u64,
    pub popped_bytes: u64,
    pub dropped: DropCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_snake_case_and_indexed_in_order() {
        let names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "queue_full",
                "queue_delay",
                "gop_tail",
                "reconnect",
                "audio_overflow"
            ]
        );
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn drop_counts_add_and_total() {
        let mut c = DropCounts::default();
        assert!(c.is_empty());
        c.add(DropReason::GopTail, 10);
        c.add(DropReason::GopTail, 5);
        c.add(DropReason::AudioOverflow, 7);
        assert_eq!(
            c.get(DropReason::GopTail),
            DropCount {
                packets: 2,
                bytes: 15
            }
        );
        assert_eq!(
            c.total(),
            DropCount {
                packets: 3,
                bytes: 22
            }
        );
        assert_eq!(c.iter().count(), 5);
        assert!(!c.is_empty());
    }
}
