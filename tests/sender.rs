//! The reconnecting sender (`polypush::rtmp::run_sender`) on tokio's paused clock, against an
//! in-memory ingest (rml_rtmp's server session over a duplex pipe, behind the connect seam):
//! the backoff schedule, stall detection, "reconnect now", the drain on stop, the slow retry
//! while credentials are rejected, rejected publishes, broken RTMP, and what a new session
//! looks like on the wire. Deterministic: the jitter is seeded, every wait is on tokio's
//! clock, and a whole schedule of minutes runs in milliseconds.
//!
//! The same sender against real nginx-rtmp (restarts, a cut link in a network namespace,
//! extended timestamps, the Polyv simulator) is `tests/reconnect.rs`.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::memory_ingest::{Got, MemoryIngest, Plan, SessionLog, MISBEHAVIOURS};
use common::sender::{pass, start, url};
use polypush::rtmp::{
    AddressClass, AddressError, AddressFuture, AddressSource, Backoff, BackoffConfig,
    ConnectOptions, FailureKind, RtmpUrl, SenderOptions, SenderState,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::Instant;

const SEED: u64 = 7;
const MS: Duration = Duration::from_millis(1);
const ADDRESS: &str = "rtmp://ingest.test/live/0123456789abcdef";

fn options() -> SenderOptions {
    SenderOptions {
        connect: ConnectOptions {
            setup_timeout: Duration::from_secs(2),
            close_timeout: Duration::from_secs(2),
            ..ConnectOptions::default()
        },
        jitter_seed: Some(SEED),
        ..SenderOptions::default()
    }
}

fn fixed() -> Arc<dyn AddressSource> {
    Arc::new(url(ADDRESS))
}

/// The delays the sender must have waited between `attempts`, replayed from the same
/// schedule, seed and instants; and the ceilings they were drawn under.
fn replay(attempts: &[Instant], kind: FailureKind) -> (Vec<Duration>, Vec<Duration>) {
    let mut backoff = Backoff::new(BackoffConfig::default());
    let mut rng = StdRng::seed_from_u64(SEED);
    attempts
        .windows(2)
        .map(|w| {
            let r = backoff.on_failure(w[0], kind, &mut rng).expect("unlimited");
            (r.delay, r.ceiling)
        })
        .unzip()
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Each gap is the delay drawn for it, rounded up to tokio's timer resolution (1 ms).
fn assert_waited(gaps: &[Duration], delays: &[Duration]) {
    assert_eq!(gaps.len(), delays.len(), "{gaps:?} vs {delays:?}");
    for (gap, delay) in gaps.iter().zip(delays) {
        assert!(
            *delay <= *gap && *gap < *delay + MS,
            "waited {gap:?} for a delay of {delay:?}: {gaps:?} vs {delays:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_retry_comes_within_half_a_second_and_retries_follow_the_backoff_schedule() {
    const REFUSALS: usize = 30; // well past the 10 s fast-retry window, up to the cap
    let t0 = Instant::now();
    let ingest = MemoryIngest::new([Plan::Refuse; REFUSALS], Plan::Accept);
    let sender = start(fixed(), Some(Arc::new(ingest.clone())), options(), 0);
    let published = sender.wait_publishing(Duration::from_secs(600)).await;

    let attempts = ingest.attempts();
    assert_eq!(attempts.len(), REFUSALS + 1);
    assert_eq!(attempts[0], t0, "the first attempt at once");
    let (delays, ceilings) = replay(&attempts, FailureKind::Unreachable);
    assert_waited(&gaps(&attempts), &delays);
    assert!(
        delays[0] <= 500 * MS,
        "first retry within 0.5 s: {delays:?}"
    );
    // Within the first 10 s of the outage at most 1 s apart (an ingest that restarts is
    // found at once); after it the ceiling doubles towards the 30 s cap.
    for (at, ceiling) in attempts.iter().zip(&ceilings) {
        if *at - t0 < Duration::from_secs(10) {
            assert!(*ceiling <= Duration::from_secs(1), "{ceilings:?}");
        }
    }
    let late: Vec<u64> = attempts
        .iter()
        .zip(&ceilings)
        .filter(|(at, _)| **at - t0 >= Duration::from_secs(10))
        .map(|(_, c)| c.as_millis() as u64)
        .collect();
    assert!(late.len() >= 3, "{ceilings:?}");
    assert!(
        late.windows(2).all(|w| w[1] == (w[0] * 2).min(30_000)),
        "{late:?}"
    );
    assert_eq!(published, attempts[REFUSALS], "publishing once accepted");

    let stats = sender.stop().await;
    assert_eq!(stats.connect_failures, REFUSALS as u64);
    assert_eq!((stats.sessions, stats.fresh_addresses), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_dropped_after_the_stall_timeout_and_replaced() {
    const STALL: Duration = Duration::from_secs(3);
    let ingest = MemoryIngest::new([Plan::AcceptThenStall], Plan::Accept);
    let sender = start(
        fixed(),
        Some(Arc::new(ingest.clone())),
        SenderOptions {
            stall_timeout: STALL,
            ..options()
        },
        0,
    );
    let published = sender.wait_publishing(Duration::from_secs(5)).await;
    let lost = sender
        .wait_stats("stall detection", Duration::from_secs(30), |s| {
            s.stalls == 1
        })
        .await;
    // Nothing the peer received since the publish: the timeout, plus at most one 50 ms tick.
    let took = lost - published;
    assert!((STALL..=STALL + 50 * MS).contains(&took), "{took:?}");
    let (_, reason) = sender.control.last_error().expect("the stall is reported");
    assert!(reason.contains("accepted no data for"), "{reason}");

    let again = sender.wait_publishing(Duration::from_secs(5)).await;
    assert!(
        again - lost <= 500 * MS,
        "the first retry after a long session is quick"
    );
    let stats = sender.stop().await;
    assert_eq!(
        (stats.stalls, stats.sessions, stats.connections_lost),
        (1, 2, 1)
    );
    assert_eq!(ingest.sessions().len(), 2);
}

/// A fixed address that records every request (when, and whether a fresh one was asked for).
struct Counting {
    url: RtmpUrl,
    calls: Mutex<Vec<(Instant, bool)>>,
}

impl Counting {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            url: url(ADDRESS),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<(Instant, bool)> {
        self.calls.lock().unwrap().clone()
    }
}

impl AddressSource for Counting {
    fn address(&self, fresh: bool) -> AddressFuture<'_> {
        self.calls.lock().unwrap().push((Instant::now(), fresh));
        Box::pin(std::future::ready(Ok(self.url.clone())))
    }
}

#[tokio::test(start_paused = true)]
async fn reconnect_now_closes_the_session_and_publishes_again_at_once_with_a_fresh_address() {
    let ingest = MemoryIngest::new([], Plan::Accept);
    let source = Counting::new();
    let sender = start(source.clone(), Some(Arc::new(ingest.clone())), options(), 0);
    sender.wait_publishing(Duration::from_secs(5)).await;
    pass(Duration::from_secs(2)).await;

    let asked = Instant::now();
    sender.control.reconnect_now();
    let again = sender
        .wait_stats("the second session", Duration::from_secs(5), |s| {
            s.sessions == 2
        })
        .await;
    assert!(again - asked < 10 * MS, "{:?}", again - asked);
    let calls = source.calls();
    assert_eq!(calls.len(), 2);
    assert!(!calls[0].1 && calls[1].1, "a fresh address: {calls:?}");
    let sessions = ingest.sessions();
    assert_eq!(
        sessions[0].got.last(),
        Some(&Got::Finished),
        "the first stream was closed cleanly (deleteStream)"
    );
    let stats = sender.stop().await;
    assert_eq!((stats.sessions, stats.connections_lost), (2, 0));
    assert_eq!(stats.last_recovery, Some(again - asked));
}

#[tokio::test(start_paused = true)]
async fn a_stop_sends_everything_queued_then_ends_the_stream_cleanly() {
    let ingest = MemoryIngest::new([], Plan::Accept);
    let sender = start(fixed(), Some(Arc::new(ingest.clone())), options(), 0);
    sender.wait_publishing(Duration::from_secs(5)).await;
    pass(Duration::from_secs(4)).await;
    let pushed = sender.producer.pushed.clone();
    let stats = sender.stop().await;

    let sessions = ingest.sessions();
    assert_eq!(sessions.len(), 1);
    let got = &sessions[0].got;
    assert_eq!(got.last(), Some(&Got::Finished), "deleteStream last");
    // The three headers, every media packet the producer pushed, then deleteStream.
    let media = pushed.load(Ordering::Relaxed) as usize;
    assert!(media > 100, "{media}");
    assert_eq!(sessions[0].media_count(), 3 + media);
    assert_eq!(stats.packets_sent as usize, 3 + media);
}

#[tokio::test(start_paused = true)]
async fn a_stop_gives_up_on_an_ingest_that_takes_nothing_within_the_drain_and_close_timeouts() {
    let ingest = MemoryIngest::new([Plan::AcceptThenStall], Plan::Accept);
    let opts = options();
    let bound = opts.drain_timeout + opts.connect.close_timeout;
    let sender = start(fixed(), Some(Arc::new(ingest.clone())), opts, 0);
    sender.wait_publishing(Duration::from_secs(5)).await;
    pass(Duration::from_secs(1)).await;
    let stopping = Instant::now();
    let stats = sender.stop().await;
    let took = Instant::now() - stopping;
    assert!(took <= bound + 100 * MS, "{took:?}");
    assert_eq!(stats.sessions, 1);
}

/// Says the platform rejects the channel credentials, `rejections` times, then gives the
/// address; records every request.
struct Rejecting {
    rejections: usize,
    class: AddressClass,
    reason: &'static str,
    calls: Mutex<Vec<(Instant, bool)>>,
}

impl Rejecting {
    fn new(rejections: usize, class: AddressClass, reason: &'static str) -> Arc<Self> {
        Arc::new(Self {
            rejections,
            class,
            reason,
            calls: Mutex::new(Vec::new()),
        })
    }
}

impl AddressSource for Rejecting {
    fn address(&self, fresh: bool) -> AddressFuture<'_> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((Instant::now(), fresh));
            calls.len()
        };
        let reply = if n <= self.rejections {
            Err(AddressError::new(
                self.class,
                self.reason,
                std::io::Error::other(format!(
                    "Polyv refused channel 153884 ({}): what to do",
                    self.reason
                )),
            ))
        } else {
            Ok(url(ADDRESS))
        };
        Box::pin(std::future::ready(reply))
    }
}

#[tokio::test(start_paused = true)]
async fn rejected_credentials_are_retried_every_credentials_retry_and_never_faster() {
    const RETRY: Duration = Duration::from_secs(300);
    let source = Rejecting::new(3, AddressClass::OperatorMustAct, "password");
    let ingest = MemoryIngest::new([], Plan::Accept);
    let sender = start(
        source.clone(),
        Some(Arc::new(ingest.clone())),
        SenderOptions {
            credentials_retry: RETRY,
            ..options()
        },
        0,
    );
    sender
        .wait_state("credentials rejected", Duration::from_secs(5), |s| {
            matches!(s, SenderState::CredentialsRejected { .. })
        })
        .await;
    match sender.control.state() {
        SenderState::CredentialsRejected {
            message,
            retry_in,
            refusal,
        } => {
            assert!(message.contains("(password): what to do"), "{message}");
            assert_eq!(retry_in, RETRY);
            assert_eq!(refusal.class, AddressClass::OperatorMustAct);
            assert_eq!(refusal.reason, "password");
        }
        other => panic!("{other:?}"),
    }
    sender.wait_publishing(Duration::from_secs(3600)).await;
    let calls = source.calls.lock().unwrap().clone();
    let times: Vec<Instant> = calls.iter().map(|c| c.0).collect();
    assert_eq!(gaps(&times), [RETRY; 3], "exactly every credentials_retry");
    assert!(!calls[0].1 && calls[1..].iter().all(|c| c.1), "{calls:?}");
    assert_eq!(ingest.attempts().len(), 1, "no connection while rejected");
    let stats = sender.stop().await;
    assert_eq!(stats.credentials_rejections, 3);
    assert_eq!(stats.sessions, 1);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_publish_asks_for_a_fresh_address_and_backs_off_without_fast_retries() {
    let ingest = MemoryIngest::new([Plan::RejectPublish], Plan::HangUpOnPublish);
    let source = Counting::new();
    let sender = start(source.clone(), Some(Arc::new(ingest.clone())), options(), 0);
    let first = sender
        .wait_stats("the first rejection", Duration::from_secs(5), |s| {
            s.publish_rejections == 1
        })
        .await;
    let (_, reason) = sender.control.last_error().unwrap();
    assert!(reason.contains("NetStream.Publish.BadName"), "{reason}");
    assert!(
        !reason.contains("0123456789abcdef"),
        "the key leaked: {reason}"
    );
    pass(Duration::from_secs(60) - (Instant::now() - first)).await;
    let stats = sender.stop().await;

    let calls = source.calls();
    let times: Vec<Instant> = calls.iter().map(|c| c.0).collect();
    let (delays, ceilings) = replay(&times, FailureKind::Rejected);
    assert_waited(&gaps(&times), &delays);
    // Never fast: the ceiling doubles from the first rejection on.
    let ms: Vec<u64> = ceilings.iter().map(|c| c.as_millis() as u64).collect();
    assert_eq!(ms[..6], [500, 1000, 2000, 4000, 8000, 16000], "{ms:?}");
    assert!(
        !calls[0].1 && calls[1..].iter().all(|c| c.1),
        "a fresh address each time"
    );
    assert_eq!(stats.fresh_addresses as usize, calls.len() - 1);
    assert_eq!(stats.publish_rejections as usize, calls.len());
    assert_eq!(stats.sessions, 0);
}

#[tokio::test(start_paused = true)]
async fn peers_that_speak_broken_rtmp_get_clean_reconnect_attempts_and_no_panic() {
    let plan: Vec<Plan> = MISBEHAVIOURS.iter().copied().map(Plan::Misbehave).collect();
    let ingest = MemoryIngest::new(plan.clone(), Plan::Accept);
    let mut opts = options();
    opts.connect.setup_timeout = 300 * MS;
    let sender = start(fixed(), Some(Arc::new(ingest.clone())), opts, 0);
    let mut reasons = BTreeSet::new();
    let mut states = sender.control.subscribe();
    while !states.borrow().is_publishing() {
        if let Some((_, reason)) = sender.control.last_error() {
            reasons.insert(reason);
        }
        tokio::time::timeout(Duration::from_secs(60), states.changed())
            .await
            .expect("the sender keeps trying")
            .expect("the sender keeps running");
    }
    for r in &reasons {
        eprintln!("  {r}");
    }
    assert!(reasons.len() >= 3, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("invalid RTMP")),
        "{reasons:?}"
    );
    let stats = sender.stop().await;
    assert_eq!(stats.connect_failures as usize, plan.len());
    assert_eq!(stats.sessions, 1, "publishing once a sane ingest answers");
}

#[tokio::test(start_paused = true)]
async fn a_new_session_starts_with_headers_and_a_keyframe_and_timestamps_continue() {
    // The first session is dropped after 2.5 s of video: the ingest "restarts".
    let ingest = MemoryIngest::new([Plan::AcceptThenDrop { after_video: 62 }], Plan::Accept);
    let sender = start(fixed(), Some(Arc::new(ingest.clone())), options(), 0);
    sender
        .wait_stats("the second session", Duration::from_secs(20), |s| {
            s.sessions == 2
        })
        .await;
    pass(Duration::from_millis(2500)).await;
    let keyframes = sender.keyframe_requests.load(Ordering::Relaxed);
    let hooks = sender.publish_hooks.load(Ordering::Relaxed);
    let stats = sender.stop().await;
    assert_eq!((keyframes, hooks), (2, 2));
    assert!(stats.headers_skipped >= 3, "{stats:?}");

    let sessions: Vec<SessionLog> = ingest.sessions();
    assert_eq!(sessions.len(), 2);
    for (i, s) in sessions.iter().enumerate() {
        let got = &s.got;
        // Headers first, exactly once each: the first session does not send the start-up
        // headers twice (from `headers()` and popped from the ring).
        assert!(
            matches!(
                got[..3],
                [Got::Metadata, Got::VideoHeader(_), Got::AudioHeader(_)]
            ),
            "session {i} starts with {:?}",
            &got[..3]
        );
        let headers = got
            .iter()
            .filter(|g| matches!(g, Got::Metadata | Got::VideoHeader(_) | Got::AudioHeader(_)))
            .count();
        assert_eq!(headers, 3, "session {i}");
        let first_video = got.iter().find_map(|g| match g {
            Got::Video { key, .. } => Some(*key),
            _ => None,
        });
        assert_eq!(
            first_video,
            Some(true),
            "session {i} starts with a keyframe"
        );
        for video in [true, false] {
            let ts: Vec<u32> = got
                .iter()
                .filter_map(|g| match (g, video) {
                    (Got::Video { ts, .. } | Got::VideoHeader(ts), true)
                    | (Got::Audio(ts) | Got::AudioHeader(ts), false) => Some(*ts),
                    _ => None,
                })
                .collect();
            assert!(ts.windows(2).all(|w| w[0] <= w[1]), "session {i}: {ts:?}");
        }
    }
    // No reset to 0: the second session's timestamps continue the first one's, per track
    // (its re-sent headers are stamped at the last timestamp sent on their track).
    let last = |got: &[Got], video: bool| {
        got.iter()
            .rev()
            .find_map(|g| match (g, video) {
                (Got::Video { ts, .. }, true) | (Got::Audio(ts), false) => Some(*ts),
                _ => None,
            })
            .unwrap()
    };
    let first_ts = |got: &[Got], video: bool| {
        got.iter()
            .find_map(|g| match (g, video) {
                (Got::VideoHeader(ts), true) | (Got::AudioHeader(ts), false) => Some(*ts),
                _ => None,
            })
            .unwrap()
    };
    for video in [true, false] {
        let (end1, start2) = (
            last(&sessions[0].got, video),
            first_ts(&sessions[1].got, video),
        );
        assert!(start2 >= end1, "video={video}: {end1} then {start2}");
        assert!(start2 > 2000, "video={video}: {start2}");
    }
}

/// "Try later" refusals (channel still live, rate limited, a server error): the first retry
/// within 5 s, then backoff with a guaranteed minimum gap (half the ceiling), never more than
/// 60 s apart, and a fresh login every time.
#[tokio::test(start_paused = true)]
async fn try_later_refusals_back_off_between_5_and_60_s_and_log_in_again() {
    let source = Rejecting::new(12, AddressClass::TryLater, "channel_live");
    let ingest = MemoryIngest::new([], Plan::Accept);
    let sender = start(source.clone(), Some(Arc::new(ingest.clone())), options(), 0);
    sender
        .wait_state("waiting on the platform", Duration::from_secs(5), |s| {
            s.refusal().is_some_and(|r| r.reason == "channel_live")
        })
        .await;
    sender.wait_publishing(Duration::from_secs(3600)).await;
    let calls = source.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 13, "12 refusals, then the address");
    assert!(
        calls[1..].iter().all(|c| c.1),
        "every retry logs in again: {calls:?}"
    );
    let times: Vec<Instant> = calls.iter().map(|c| c.0).collect();
    let gaps = gaps(&times);
    assert!(gaps[0] <= Duration::from_secs(5), "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_secs(60)),
        "{gaps:?}"
    );
    // Each wait is at least half of the backoff's ceiling for that failure (replayed on a
    // fresh backoff at the same instants: ceilings do not depend on the jitter).
    let mut backoff = Backoff::new(options().backoff);
    let mut rng = StdRng::seed_from_u64(SEED);
    for (i, g) in gaps.iter().enumerate() {
        let ceiling = backoff
            .on_failure(times[i], FailureKind::Rejected, &mut rng)
            .unwrap()
            .ceiling;
        assert!(
            *g >= ceiling / 2 && *g <= ceiling.max(Duration::from_millis(1)) + MS,
            "gap {i} is {g:?} for a ceiling of {ceiling:?}: {gaps:?}"
        );
    }
    assert!(
        gaps[6..].iter().all(|g| *g >= Duration::from_secs(4)),
        "the backoff grew: {gaps:?}"
    );
    let stats = sender.stop().await;
    assert_eq!(stats.platform_refusals, 12);
    assert_eq!(stats.credentials_rejections, 0);
}
