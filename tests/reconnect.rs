//! The reconnecting sender (`polypush::rtmp::run_sender`) end to end against real peers:
//! nginx-rtmp restarted under it, a link cut inside a network namespace, the Polyv simulator
//! rejecting credentials, and timestamps past the 24-bit RTMP limit. These prove the behaviour
//! against real ingests and check the recordings; the timing rules (backoff, stall detection,
//! the credentials retry) are pinned exactly on the paused clock in `tests/sender.rs`, and the
//! recovery times against a real nginx are measured by `bench/restart_compare.sh`.
//!
//! Media is real H.264/AAC pushed into the ring in real time by a producer that loops it
//! with continuing timestamps, as the encoders would. Every wait is on a condition with a
//! deadline; the fixed waits are the scenario's own durations (how long to publish, how long
//! the ingest is down). Processes are stopped by PID.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use polypush::broadcast::PolyvAddress;
use polypush::platform::{Endpoints, PolyvSettings};
use polypush::rtmp::{self, ConnectOptions, SenderOptions, SenderState};
use polypush::secret::Secret;
use tokio::task::block_in_place;
use tokio::time::Instant;

use common::nginx::{decode_errors, Nginx, NginxOptions};
use common::sender::{pass, start, url};
use common::{flv_tags, FlvTag, Sim, CHANNEL, PASSWORD};

fn fast_options() -> SenderOptions {
    SenderOptions {
        connect: ConnectOptions {
            connect_timeout: Duration::from_secs(2),
            setup_timeout: Duration::from_secs(2),
            close_timeout: Duration::from_secs(2),
            ..ConnectOptions::default()
        },
        ..SenderOptions::default()
    }
}

/// Waits until nginx logged `n` publishes of `stream`.
fn wait_publishes(nginx: &Nginx, stream: &str, n: usize) -> bool {
    block_in_place(|| nginx.wait_for_publishes(stream, n, Duration::from_secs(5)))
}

// ---------------------------------------------------------------------------------------------
// Recordings

/// Checks one nginx recording: decodes cleanly, starts (after the sequence headers) with a
/// keyframe, timestamps monotonic and without gaps per track (nginx-rtmp writes them relative
/// to the recording's first frame, so a misread RTMP timestamp shows up as a jump). Returns
/// the media span in ms.
fn check_recording(path: &Path) -> u32 {
    let errors = decode_errors(path);
    assert!(
        errors.trim().is_empty(),
        "{}: decode errors: {errors}",
        path.display()
    );
    let tags = flv_tags(path);
    let media: Vec<&FlvTag> = tags.iter().filter(|t| t.is_media()).collect();
    assert!(
        media.len() > 20,
        "{}: only {} media tags",
        path.display(),
        media.len()
    );
    let first_video = media
        .iter()
        .find(|t| t.kind == 9)
        .unwrap_or_else(|| panic!("{}: no video", path.display()));
    assert!(
        first_video.is_video_keyframe(),
        "{}: the first video frame is not a keyframe",
        path.display()
    );
    for kind in [8u8, 9] {
        let ts: Vec<u32> = media
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.ts_ms)
            .collect();
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "{}: timestamps of tag type {kind} go backwards",
            path.display()
        );
        let gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        assert!(
            gap <= 250,
            "{}: a {gap} ms gap in tag type {kind}",
            path.display()
        );
    }
    media.last().unwrap().ts_ms - media[0].ts_ms
}

// ---------------------------------------------------------------------------------------------
// nginx restarted three times

/// Three restarts of a real nginx under a publishing sender: each is noticed, each time the
/// sender publishes again (a new `publish` in nginx's log), and every recording is clean.
/// (How fast it comes back is measured by `bench/restart_compare.sh`; the rule behind it, the
/// fast-retry window, is pinned in `tests/sender.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ingest_restarts_each_end_in_publishing_again_with_clean_recordings() {
    const STREAM: &str = "restarts";
    let mut nginx = Nginx::start_with(NginxOptions {
        record_unique: true,
        ..NginxOptions::default()
    });
    let sender = start(Arc::new(url(&nginx.url(STREAM))), None, fast_options(), 0);
    sender.wait_publishing(Duration::from_secs(10)).await;

    for (i, outage_ms) in [1000u64, 1500, 2000].into_iter().enumerate() {
        // Publish a while (longer than `reset_after`, so each restart is a new outage).
        pass(Duration::from_millis(3500)).await;
        block_in_place(|| nginx.stop());
        sender
            .wait_state("noticing the restart", Duration::from_secs(10), |s| {
                !s.is_publishing()
            })
            .await;
        pass(Duration::from_millis(outage_ms)).await;
        block_in_place(|| nginx.start_again());
        let back = Instant::now();
        sender.wait_publishing(Duration::from_secs(15)).await;
        eprintln!(
            "restart {}: outage {outage_ms} ms, publishing again {} ms after nginx was back",
            i + 1,
            back.elapsed().as_millis()
        );
        assert!(
            wait_publishes(&nginx, STREAM, i + 2),
            "nginx did not log publish #{}",
            i + 2
        );
    }
    pass(Duration::from_millis(3000)).await;
    let stats = sender.stop().await;
    assert_eq!(stats.sessions, 4, "{stats:?}");
    assert_eq!(stats.reconnects, 3, "{stats:?}");
    assert_eq!(stats.connections_lost, 3, "{stats:?}");
    assert!(stats.last_recovery.is_some());
    assert!(stats.headers_skipped >= 3, "{stats:?}");

    // close() returned after nginx hung up, so every recording is complete. (nginx writes
    // timestamps relative to each recording's start, so continuity across sessions is checked
    // on the wire instead, by `tests/sender.rs`.)
    let recordings = nginx.recordings(STREAM);
    assert_eq!(recordings.len(), 4, "{recordings:?}");
    for rec in &recordings {
        let span = check_recording(rec);
        assert!(span >= 2000, "{}: {span} ms", rec.display());
    }
}

fn logins(sim: &Sim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r["path"] == "/api/v2/teacher_login.json")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_polyv_sim_credentials_then_a_busy_stream_then_publishing() {
    let nginx = Nginx::start();
    let sim = block_in_place(|| {
        Sim::start_with(&[
            "--rtmp-base",
            &format!("rtmp://127.0.0.1:{}/live/", nginx.port()),
        ])
    });
    let stream = block_in_place(|| sim.channel(CHANNEL)["stream"].as_str().unwrap().to_string());
    block_in_place(|| sim.set_channel(CHANNEL, r#"{"password":"not-the-configured-one"}"#));
    let cfg = PolyvSettings {
        channel_id: CHANNEL.into(),
        password: Some(Secret::new(PASSWORD)),
        timeout_s: 5,
        endpoints: Endpoints::all(&sim.base),
        ..PolyvSettings::default()
    };
    let source = Arc::new(PolyvAddress::new(&cfg).unwrap());
    let sender = start(
        source,
        None,
        SenderOptions {
            credentials_retry: Duration::from_secs(1),
            ..fast_options()
        },
        0,
    );

    // 1. Credentials rejected: visible state, slow retries (every second here, 300 s by
    //    default), not the backoff's fast ones.
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
            assert!(message.contains("rejected the credentials"), "{message}");
            assert_eq!(refusal.reason, "password");
            assert_eq!(retry_in, Duration::from_secs(1));
        }
        other => panic!("{other:?}"),
    }
    // Retried: a second rejected login (the spacing is pinned in tests/sender.rs).
    sender
        .wait_stats("a second rejected login", Duration::from_secs(10), |s| {
            s.credentials_rejections >= 2
        })
        .await;
    let attempts = block_in_place(|| logins(&sim));
    assert!(attempts >= 2, "{attempts} logins");

    // 2. Someone else publishes the stream; the operator fixes the password and asks for a
    //    reconnect: nginx answers BadName, and each rejection brings a fresh login.
    let blocker = rtmp::connect(&url(&nginx.url(&stream)), &ConnectOptions::default())
        .await
        .expect("the other publisher");
    block_in_place(|| sim.set_channel(CHANNEL, &format!(r#"{{"password":"{PASSWORD}"}}"#)));
    sender.control.reconnect_now();
    sender
        .wait_stats("two rejected publishes", Duration::from_secs(10), |s| {
            s.publish_rejections >= 2
        })
        .await;
    let (_, reason) = sender.control.last_error().unwrap();
    assert!(reason.contains("NetStream.Publish.BadName"), "{reason}");
    assert!(!reason.contains(&stream), "the stream key leaked: {reason}");

    // 3. The stream is free again: publishing within the backoff.
    blocker.close().await.expect("the other publisher leaves");
    sender.wait_publishing(Duration::from_secs(15)).await;
    let stats = sender.control.stats();
    let after = block_in_place(|| logins(&sim));
    assert!(
        after - attempts > stats.publish_rejections as usize,
        "{after} logins for {stats:?}"
    );
    assert_eq!(sender.publish_hooks.load(Ordering::Relaxed), 1);
    let stats = sender.stop().await;
    assert_eq!(stats.sessions, 1, "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// A link cut inside a network namespace

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_is_detected_and_publishing_resumes_when_it_is_back() {
    const STALL: Duration = Duration::from_secs(3);
    const STREAM: &str = "linkcut";
    let ns = match netns::NetNs::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED a_cut_link_is_detected_and_publishing_resumes_when_it_is_back: cannot create a network namespace ({why}); needs root or CAP_NET_ADMIN");
            return;
        }
    };
    // Declared after `ns`, so dropped (killed) first, also on panic.
    let nginx = block_in_place(|| {
        Nginx::start_with(NginxOptions {
            record_unique: true,
            // How the ingest forgets the publisher whose link died (real ingests time out
            // idle publishers too); otherwise it would refuse the new session as
            // "Already publishing" until its own timeout.
            drop_idle_publisher: Some(Duration::from_secs(2)),
            netns: Some(ns.name.clone()),
            listen: Some(ns.ns_ip),
        })
    });
    let sender = start(
        Arc::new(url(&nginx.url(STREAM))),
        None,
        SenderOptions {
            stall_timeout: STALL,
            ..fast_options()
        },
        0,
    );
    sender.wait_publishing(Duration::from_secs(10)).await;
    pass(Duration::from_millis(2000)).await;

    ns.set_link(false);
    let cut = Instant::now();
    sender
        .wait_stats("stall detection", Duration::from_secs(15), |s| {
            s.stalls >= 1
        })
        .await;
    eprintln!("link cut detected after {} ms", cut.elapsed().as_millis());
    assert!(!sender.control.state().is_publishing());
    let (_, reason) = sender.control.last_error().expect("the stall is reported");
    assert!(reason.contains("accepted no data for"), "{reason}");

    // Back while the sender retries: it publishes again (a second `publish` in nginx's log).
    pass(Duration::from_secs(2)).await;
    ns.set_link(true);
    let up = Instant::now();
    sender.wait_publishing(Duration::from_secs(20)).await;
    eprintln!(
        "publishing again {} ms after the link came back",
        up.elapsed().as_millis()
    );
    assert!(
        wait_publishes(&nginx, STREAM, 2),
        "nginx did not see the second publish:\n{}",
        nginx.error_log()
    );
    pass(Duration::from_millis(2000)).await;
    let stats = sender.stop().await;
    assert_eq!(stats.sessions, 2, "{stats:?}");
    assert_eq!(stats.stalls, 1, "{stats:?}");
    let recordings = nginx.recordings(STREAM);
    let last = recordings
        .last()
        .expect("a recording of the resumed session");
    check_recording(last);
}

// ---------------------------------------------------------------------------------------------
// Timestamps past the 24-bit limit

/// Pipeline timestamps from 0xFFFFFF - 2000 ms. The first session crosses 0xFFFFFF in its
/// type-1/2 deltas (small, so no extended field: rml_rtmp sends an absolute timestamp only in
/// the first, type-0, chunk of each chunk stream); then a reconnect makes the second session's
/// type-0 chunks (its metadata and sequence headers, stamped past 0xFFFFFF) carry the 32-bit
/// extended timestamp, and every later delta builds on it. nginx must follow both: clean
/// decoding, no jumps. (The wire format, continuation chunks included, is checked byte by byte
/// in the session's unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_past_0xffffff_use_extended_timestamps_and_record_cleanly() {
    const BASE: u64 = 0xFF_FFFF - 2000;
    let nginx = Nginx::start_with(NginxOptions {
        record_unique: true,
        ..NginxOptions::default()
    });
    let sender = start(
        Arc::new(url(&nginx.url("extended"))),
        None,
        fast_options(),
        BASE,
    );
    sender.wait_publishing(Duration::from_secs(5)).await;
    pass(Duration::from_millis(3200)).await;
    sender.control.reconnect_now();
    sender
        .wait_stats("the second session", Duration::from_secs(10), |s| {
            s.sessions == 2
        })
        .await;
    pass(Duration::from_millis(3000)).await;
    let stats = sender.stop().await;
    assert_eq!(stats.sessions, 2, "{stats:?}");
    let recordings = nginx.recordings("extended");
    assert_eq!(recordings.len(), 2, "{recordings:?}");
    for rec in &recordings {
        let span = check_recording(rec);
        eprintln!("{}: {span} ms of media", rec.display());
        assert!(span >= 2500, "{}: {span} ms", rec.display());
    }
    assert_eq!(nginx.publish_count("extended"), 2, "{}", nginx.error_log());
}
