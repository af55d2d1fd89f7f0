//! The sender's decisions, checked with an injected `now` and a seeded jitter.

use super::*;
use crate::rtmp::sender::control::{Refusal, SenderOptions, MAX_STALL_TIMEOUT};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

fn core() -> Core {
    Core::new(BackoffConfig::default(), Duration::from_secs(300))
}

fn refusal(class: AddressClass, reason: &'static str, m: &str) -> AddressError {
    AddressError::new(class, reason, std::io::Error::other(m.to_string()))
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(1)
}

fn refused() -> RtmpError {
    RtmpError::Refused {
        addr: "127.0.0.1:1935".into(),
    }
}

fn rejected() -> RtmpError {
    RtmpError::PublishRejected {
        stream: "abc***".into(),
        code: "NetStream.Publish.BadName".into(),
        description: "Already publishing".into(),
    }
}

fn wait(step: Step) -> (Duration, SenderState) {
    match step {
        Step::Wait { delay, state } => (delay, state),
        Step::Stop(e) => panic!("unexpected stop: {e}"),
    }
}

#[test]
fn transient_failures_retry_the_same_address_and_count_attempts() {
    let mut c = core();
    let mut rng = rng();
    let t0 = Instant::now();
    assert_eq!(c.connecting(), SenderState::Connecting { attempt: 1 });
    let (delay, state) = wait(c.on_connect_error(t0, refused(), &mut rng));
    assert!(delay <= 500 * MS);
    match state {
        SenderState::Waiting {
            retry_in,
            reason,
            refusal,
        } => {
            assert_eq!(retry_in, delay);
            assert!(reason.contains("refused"), "{reason}");
            assert_eq!(refusal, None, "an ingest's refusal is not the platform's");
        }
        other => panic!("{other:?}"),
    }
    assert!(!c.take_fresh());
    assert_eq!(c.connecting(), SenderState::Connecting { attempt: 2 });
    assert_eq!(c.stats.connect_failures, 1);
}

#[test]
fn a_rejection_asks_for_a_fresh_address_once() {
    let mut c = core();
    let mut rng = rng();
    let t0 = Instant::now();
    wait(c.on_connect_error(t0, rejected(), &mut rng));
    assert!(c.take_fresh());
    assert!(!c.take_fresh(), "only the next request is fresh");
    assert_eq!(c.stats.publish_rejections, 1);
    assert_eq!(c.stats.fresh_addresses, 1);
    // Rejections are never retried fast: the second ceiling is already 1 s, the third 2 s.
    wait(c.on_connect_error(t0, rejected(), &mut rng));
    let (delay, _) = wait(c.on_connect_error(t0 + 100 * MS, rejected(), &mut rng));
    assert!(delay <= 2000 * MS);
    assert_eq!(c.backoff.failures(), 3);
}

#[test]
fn fatal_errors_stop() {
    let mut c = core();
    let bad = RtmpError::BadUrl {
        url: "x".into(),
        reason: "y".into(),
    };
    assert!(matches!(
        c.on_connect_error(Instant::now(), bad, &mut rng()),
        Step::Stop(RtmpError::BadUrl { .. })
    ));
    assert!(matches!(
        c.on_address_error(
            Instant::now(),
            refusal(AddressClass::BadConfig, "config", "no password configured"),
            &mut rng()
        ),
        Step::Stop(RtmpError::Address { .. })
    ));
}

#[test]
fn max_attempts_stops_with_the_last_error() {
    let mut c = Core::new(
        BackoffConfig {
            max_attempts: Some(2),
            ..BackoffConfig::default()
        },
        Duration::from_secs(300),
    );
    let t0 = Instant::now();
    wait(c.on_connect_error(t0, refused(), &mut rng()));
    match c.on_connect_error(t0, refused(), &mut rng()) {
        Step::Stop(RtmpError::GaveUp { attempts: 2, last }) => {
            assert!(matches!(*last, RtmpError::Refused { .. }))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn credentials_rejected_retries_slowly_with_a_visible_state() {
    let mut c = core();
    let t0 = Instant::now();
    let msg = "Polyv rejected the credentials of channel 1";
    for i in 0..3 {
        let (delay, state) = wait(c.on_address_error(
            t0 + i * 300 * 1000 * MS,
            refusal(AddressClass::OperatorMustAct, "password", msg),
            &mut rng(),
        ));
        assert_eq!(delay, Duration::from_secs(300));
        assert_eq!(
            state,
            SenderState::CredentialsRejected {
                message: msg.into(),
                retry_in: Duration::from_secs(300),
                refusal: Refusal {
                    class: AddressClass::OperatorMustAct,
                    reason: "password",
                    message: msg.into(),
                },
            }
        );
        // A fresh login next time, and the backoff is not involved.
        assert!(c.take_fresh());
    }
    assert_eq!(c.stats.credentials_rejections, 3);
    assert_eq!(c.backoff.failures(), 0);
    assert!(c.credentials.is_some());
    c.on_address();
    assert!(c.credentials.is_none());
}

#[test]
fn platform_trouble_backs_off_without_the_fast_window() {
    let mut c = core();
    let t0 = Instant::now();
    let mut ceilings = Vec::new();
    for i in 0..4 {
        let (delay, _) = wait(c.on_address_error(
            t0 + i * 10 * MS,
            refusal(AddressClass::Unavailable, "server_error", "Polyv is down"),
            &mut rng(),
        ));
        ceilings.push(delay);
    }
    assert!(ceilings[3] <= 4000 * MS);
    assert_eq!(c.backoff.failures(), 4);
}

#[test]
fn recovery_is_measured_from_the_loss_and_a_long_session_resets_the_backoff() {
    let mut c = core();
    let mut rng = rng();
    let t0 = Instant::now();
    assert_eq!(c.on_publishing(t0), None);
    assert_eq!(c.stats.sessions, 1);

    let lost = t0 + Duration::from_secs(60);
    let stalled = RtmpError::Stalled {
        addr: "h:1".into(),
        after: Duration::from_secs(10),
    };
    let (delay, _) = wait(c.on_lost(lost, stalled, &mut rng));
    assert!(
        delay <= 500 * MS,
        "the first retry after a long session is quick"
    );
    assert_eq!(c.stats.stalls, 1);
    assert_eq!(c.stats.connections_lost, 1);
    wait(c.on_connect_error(lost + 400 * MS, refused(), &mut rng));

    let back = lost + 1300 * MS;
    assert_eq!(c.on_publishing(back), Some(1300 * MS));
    assert_eq!(c.stats.last_recovery, Some(1300 * MS));
    assert_eq!((c.stats.sessions, c.stats.reconnects), (2, 1));

    // Lost again after 2 s: a flapping ingest; the growth continues.
    let (_, _) = wait(c.on_lost(back + 2000 * MS, refused(), &mut rng));
    assert_eq!(c.backoff.failures(), 3);
}

#[test]
fn reconnect_now_resets_and_asks_for_a_fresh_address() {
    let mut c = core();
    let mut rng = rng();
    let t0 = Instant::now();
    for i in 0..6 {
        wait(c.on_connect_error(t0 + i * MS, rejected(), &mut rng));
    }
    c.take_fresh();
    c.on_reconnect_requested(None);
    assert!(c.take_fresh());
    assert_eq!(c.backoff.failures(), 0);
    assert_eq!(c.connecting(), SenderState::Connecting { attempt: 1 });

    // While publishing: the recovery is measured from the close.
    c.on_publishing(t0);
    c.on_reconnect_requested(Some(t0 + Duration::from_secs(5)));
    assert_eq!(
        c.on_publishing(t0 + Duration::from_secs(5) + 30 * MS),
        Some(30 * MS)
    );
}

#[test]
fn states_read_well() {
    let s = SenderState::Waiting {
        retry_in: 700 * MS,
        reason: "ingest 127.0.0.1:1935 refused the connection".into(),
        refusal: None,
    };
    assert_eq!(
        s.to_string(),
        "retrying in 0.7 s: ingest 127.0.0.1:1935 refused the connection"
    );
    assert_eq!(s.name(), "waiting");
    assert!(!s.is_publishing());
}

#[test]
fn options_are_validated_and_clamped() {
    assert!(SenderOptions::default().validate().is_ok());
    let too_long = SenderOptions {
        stall_timeout: Duration::from_secs(30),
        ..SenderOptions::default()
    };
    assert!(too_long.validate().unwrap_err().contains("stall timeout"));
    assert_eq!(too_long.sanitized().stall_timeout, MAX_STALL_TIMEOUT);
}

#[test]
fn try_later_waits_at_least_as_long_as_the_platform_asks() {
    let mut c = core();
    let t0 = Instant::now();
    let (delay, state) = wait(c.on_address_error(
        t0,
        AddressError {
            retry_after: Some(Duration::from_secs(300)),
            ..refusal(AddressClass::TryLater, "rate_limited", "rate limited")
        },
        &mut rng(),
    ));
    assert_eq!(delay, Duration::from_secs(300));
    match state {
        SenderState::Waiting {
            retry_in,
            refusal: Some(r),
            ..
        } => {
            assert_eq!(retry_in, delay);
            assert_eq!(
                (r.class, r.reason),
                (AddressClass::TryLater, "rate_limited")
            );
            assert_eq!(r.message, "rate limited");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.stats.connect_failures, 1);
    assert_eq!(c.stats.platform_refusals, 1);
    assert!(c.take_fresh(), "the next try logs in again");
}

#[test]
fn try_later_retries_first_within_5_s_and_then_at_most_60_s_apart() {
    let mut c = core();
    let mut rng = rng();
    let mut t = Instant::now();
    let mut delays = Vec::new();
    for _ in 0..40 {
        let (delay, _) = wait(c.on_address_error(
            t,
            refusal(AddressClass::TryLater, "channel_live", "channel in live"),
            &mut rng,
        ));
        delays.push(delay);
        t += delay + 300 * MS; // the login itself takes a moment
    }
    assert!(delays[0] <= Duration::from_secs(5), "{delays:?}");
    assert!(
        delays.iter().all(|d| *d <= PLATFORM_RETRY_CAP),
        "{delays:?}"
    );
    // The backoff grows: late waits are long (jittered, so look at the best of the tail).
    let tail = &delays[30..];
    assert!(
        tail.iter().any(|d| *d >= Duration::from_secs(20)),
        "{delays:?}"
    );
    // Never faster than Polyv's limit (1500 per 10 s): here, a few per minute at most.
    let total: Duration = delays[10..].iter().sum();
    assert!(total >= Duration::from_secs(30 * 5), "{delays:?}");
}
