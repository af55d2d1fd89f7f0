//! The service loop on tokio's paused clock with an injected wall clock: schedule windows open
//! and close on time, a clock step moves the next start, a reload that leaves no window ends
//! the broadcast, a stop before the first publish is clean; lesson control (extend, stop now,
//! start now, an override across a restart). The broadcast is a stand-in that
//! records when it was started and told to stop (the real one is `tests/daemon.rs`, end to
//! end); the wall clock is a fixed date plus tokio's elapsed time, so no test depends on the
//! time of day.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use polypush::broadcast::{
    BroadcastCommand, BroadcastIo, BroadcastSettings, RunError, RunOptions, RunSummary,
};
use polypush::config::Config;
use polypush::service::{
    command_channel, BroadcastFuture, Broadcaster, Service, ServiceCommand, ServiceOptions,
    WallClock,
};
use tokio::time::Instant;

/// 2030-03-04 07:59:50 UTC (a Monday).
fn wall_start() -> SystemTime {
    let ts: jiff::Timestamp = "2030-03-04T07:59:50Z".parse().unwrap();
    SystemTime::from(ts)
}

/// A fixed wall-clock start that moves with tokio's clock; `step` jumps it (an NTP step).
struct TestClock {
    wall0: SystemTime,
    t0: Instant,
    step: Mutex<Duration>,
}

impl TestClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            wall0: wall_start(),
            t0: Instant::now(),
            step: Mutex::new(Duration::ZERO),
        })
    }
}

impl WallClock for TestClock {
    fn now(&self) -> SystemTime {
        self.wall0 + (Instant::now() - self.t0) + *self.step.lock().unwrap()
    }
}

/// One broadcast as the stand-in saw it: when it started and when it was told to stop
/// (tokio's clock, from the test's start), and the stream key it was given.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    started: Duration,
    stopped: Option<Duration>,
    url: String,
}

/// Runs "broadcasts" that wait for their Stop, recording both; `published`: whether they
/// count as having published (else a stop ends them with `NeverPublished`).
struct Recorder {
    t0: Instant,
    seen: Arc<Mutex<Vec<Seen>>>,
    published: bool,
    /// The first this many broadcasts fail at once with `failure()`.
    fail_first: usize,
    failure: fn() -> RunError,
}

impl Broadcaster for Recorder {
    fn run(&self, settings: BroadcastSettings, io: BroadcastIo) -> BroadcastFuture {
        let (t0, seen, published) = (self.t0, self.seen.clone(), self.published);
        let (fail_first, failure) = (self.fail_first, self.failure);
        let url = match &settings.destination {
            polypush::broadcast::Destination::Url(u) => u.stream_key().to_string(),
            polypush::broadcast::Destination::Polyv(_) => "polyv".into(),
        };
        Box::pin(async move {
            let index = {
                let mut s = seen.lock().unwrap();
                s.push(Seen {
                    started: Instant::now() - t0,
                    stopped: None,
                    url,
                });
                s.len() - 1
            };
            if index < fail_first {
                seen.lock().unwrap()[index].stopped = Some(Instant::now() - t0);
                return Err(failure());
            }
            let mut commands = io.commands;
            while let Some(cmd) = commands.recv().await {
                if matches!(cmd, BroadcastCommand::Stop) {
                    break;
                }
            }
            seen.lock().unwrap()[index].stopped = Some(Instant::now() - t0);
            if published {
                Ok(RunSummary {
                    elapsed: Instant::now() - t0,
                    pipeline: Default::default(),
                    ring: Default::default(),
                    bytes_sent: 0,
                    reconnects: 0,
                })
            } else {
                Err(RunError::NeverPublished {
                    elapsed_s: 0.0,
                    reason: "test".into(),
                    exit: polypush::exit::ExitCode::Unavailable,
                })
            }
        })
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    config: PathBuf,
    clock: Arc<TestClock>,
    seen: Arc<Mutex<Vec<Seen>>>,
    t0: Instant,
}

const BASE: &str = "[polyv]\nchannel_id = \"1\"\n[target]\nurl = \"rtmp://127.0.0.1:1/live/a\"\n[status]\nenabled = false\n";

impl Harness {
    fn new(extra: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("polypush.toml");
        std::fs::write(&config, format!("{BASE}{extra}")).unwrap();
        Harness {
            _dir: dir,
            config,
            clock: TestClock::new(),
            seen: Arc::default(),
            t0: Instant::now(),
        }
    }

    fn service(&self, published: bool) -> Service {
        self.build(published, 0, || unreachable!())
    }

    /// Broadcasts that publish, except the first `n`, which fail at once with `failure()`.
    fn failing_service(&self, n: usize, failure: fn() -> RunError) -> Service {
        self.build(true, n, failure)
    }

    fn build(&self, published: bool, fail_first: usize, failure: fn() -> RunError) -> Service {
        Service {
            clock: self.clock.clone(),
            broadcaster: Arc::new(Recorder {
                t0: self.t0,
                seen: self.seen.clone(),
                published,
                fail_first,
                failure,
            }),
        }
    }

    fn options(&self, duration: Option<Duration>) -> ServiceOptions {
        ServiceOptions {
            config_path: self.config.clone(),
            run: RunOptions::default(),
            duration,
            ..ServiceOptions::default()
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn load(path: &Path) -> Config {
    Config::load(path).unwrap()
}

const S: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn windows_open_and_close_on_the_wall_clock() {
    // 08:00-08:30 and 09:00-09:05 UTC on the day the clock starts (10 s before 08:00).
    let h = Harness::new(
        "[[schedule]]\ndate = \"2030-03-04\"\nstart = \"08:00\"\nend = \"08:30\"\ntimezone = \"UTC\"\n\
         [[schedule]]\ndate = \"2030-03-04\"\nstart = \"09:00\"\nend = \"09:05\"\ntimezone = \"UTC\"\n",
    );
    let (_tx, rx) = command_channel();
    let summary = h
        .service(true)
        .run(load(&h.config), h.options(Some(2 * 3600 * S)), rx)
        .await
        .unwrap();
    let seen = h.seen();
    assert_eq!(
        seen.iter()
            .map(|s| (s.started, s.stopped))
            .collect::<Vec<_>>(),
        [
            (10 * S, Some(10 * S + 1800 * S)),
            (10 * S + 3600 * S, Some(10 * S + 3900 * S)),
        ],
        "started at each window's start, stopped at its end, to the millisecond"
    );
    assert_eq!(summary.broadcasts, 2);
    assert_eq!(seen[0].url, "a");
}

#[tokio::test(start_paused = true)]
async fn a_clock_step_moves_the_next_start() {
    // The window is an hour away; the box's clock is an hour slow and NTP fixes it after
    // 45 s: the window is open now, and the loop finds it at its next look (≤ 30 s).
    let h = Harness::new(
        "[[schedule]]\ndate = \"2030-03-04\"\nstart = \"09:00\"\nend = \"09:10\"\ntimezone = \"UTC\"\n",
    );
    let clock = h.clock.clone();
    let (_tx, rx) = command_channel();
    let stepper = tokio::spawn(async move {
        tokio::time::sleep_until(Instant::now() + 45 * S).await;
        *clock.step.lock().unwrap() = Duration::from_secs(3600);
    });
    h.service(true)
        .run(load(&h.config), h.options(Some(600 * S)), rx)
        .await
        .unwrap();
    stepper.await.unwrap();
    let seen = h.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        (45 * S..=75 * S).contains(&seen[0].started),
        "started {:?} after the step at 45 s",
        seen[0].started
    );
    assert_eq!(seen[0].started.as_secs() % 30, 0, "at a 30 s recheck");
}

#[tokio::test(start_paused = true)]
async fn a_reload_whose_schedule_leaves_no_window_stops_the_broadcast_at_once() {
    let h = Harness::new("");
    let (tx, rx) = command_channel();
    let config = h.config.clone();
    let driver = tokio::spawn(async move {
        tokio::time::sleep_until(Instant::now() + 60 * S).await;
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            format!("{text}[[schedule]]\ndate = \"2020-01-01\"\nstart = \"08:00\"\nend = \"09:00\"\ntimezone = \"UTC\"\n"),
        )
        .unwrap();
        tx.send(ServiceCommand::Reload).await.unwrap();
        tx
    });
    h.service(true)
        .run(load(&h.config), h.options(Some(300 * S)), rx)
        .await
        .unwrap();
    let _tx = driver.await.unwrap();
    let seen = h.seen();
    assert_eq!(
        seen.len(),
        1,
        "idle after it, no second broadcast: {seen:?}"
    );
    assert_eq!(
        (seen[0].started, seen[0].stopped),
        (Duration::ZERO, Some(60 * S))
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_of_the_push_address_restarts_the_broadcast_with_the_new_one() {
    let h = Harness::new("");
    let (tx, rx) = command_channel();
    let config = h.config.clone();
    let driver = tokio::spawn(async move {
        tokio::time::sleep_until(Instant::now() + 20 * S).await;
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, text.replace("/live/a", "/live/b")).unwrap();
        tx.send(ServiceCommand::Reload).await.unwrap();
        // An invalid file is refused: the broadcast goes on untouched.
        tokio::time::sleep_until(Instant::now() + 20 * S).await;
        std::fs::write(&config, "[video]\nbogus = 1\n").unwrap();
        tx.send(ServiceCommand::Reload).await.unwrap();
        tx
    });
    h.service(true)
        .run(load(&h.config), h.options(Some(60 * S)), rx)
        .await
        .unwrap();
    let _tx = driver.await.unwrap();
    let seen = h.seen();
    let urls: Vec<&str> = seen.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(urls, ["a", "b"]);
    assert_eq!(
        seen.iter()
            .map(|s| (s.started, s.stopped))
            .collect::<Vec<_>>(),
        [(Duration::ZERO, Some(20 * S)), (20 * S, Some(60 * S))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_before_the_first_publish_is_clean_but_a_duration_without_one_is_an_error() {
    let h = Harness::new("");
    let (tx, rx) = command_channel();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep_until(Instant::now() + 5 * S).await;
        tx.send(ServiceCommand::Stop).await.unwrap();
        tx
    });
    let by_operator = h
        .service(false)
        .run(load(&h.config), h.options(None), rx)
        .await;
    let _tx = stopper.await.unwrap();
    assert!(by_operator.is_ok(), "{by_operator:?}");

    let (_tx, rx) = command_channel();
    let by_duration = h
        .service(false)
        .run(load(&h.config), h.options(Some(5 * S)), rx)
        .await;
    match by_duration {
        Err(e @ RunError::NeverPublished { .. }) => {
            assert_eq!(e.exit_code().code(), 4)
        }
        other => panic!("{other:?}"),
    }
}

fn internal_failure() -> RunError {
    RunError::Headers(polypush::flv::FlvError::NoSps)
}

fn config_failure() -> RunError {
    RunError::Setting(polypush::setting::InvalidSetting::new(
        "record.dir",
        "not writable: make it writable by the service user",
    ))
}

/// A broadcast that fails does not end the service: it is started again after 5 s, then
/// 10 s, 20 s (doubling to 60 s), in state `failed` meanwhile; the run ends only when told.
#[tokio::test(start_paused = true)]
async fn a_failed_broadcast_is_started_again_with_backoff_and_the_service_stays_up() {
    let h = Harness::new("");
    let (_tx, rx) = command_channel();
    let summary = h
        .failing_service(3, internal_failure)
        .run(load(&h.config), h.options(Some(120 * S)), rx)
        .await
        .expect("the service ends on --duration, not on the failures");
    let starts: Vec<Duration> = h.seen().iter().map(|s| s.started).collect();
    assert_eq!(
        starts,
        [Duration::ZERO, 5 * S, 15 * S, 35 * S],
        "waits of 5, 10, 20 s"
    );
    assert_eq!(summary.broadcasts, 4);
    assert!(
        summary.last.is_some(),
        "the fourth broadcast ran to the end"
    );
}

/// A configuration that cannot work ends the service only at its first start (exit 2, which
/// systemd does not restart on); later (a reload made it so) the service keeps retrying.
#[tokio::test(start_paused = true)]
async fn only_a_broken_configuration_at_the_first_start_ends_the_service() {
    let h = Harness::new("");
    let (_tx, rx) = command_channel();
    let err = h
        .failing_service(1, config_failure)
        .run(load(&h.config), h.options(Some(60 * S)), rx)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), polypush::exit::ExitCode::Config);
    assert_eq!(h.seen().len(), 1);

    let h = Harness::new("");
    let (_tx, rx) = command_channel();
    h.failing_service(3, || {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        // An internal failure first, then configuration failures (after a reload).
        if N.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            internal_failure()
        } else {
            config_failure()
        }
    })
    .run(load(&h.config), h.options(Some(60 * S)), rx)
    .await
    .expect("a later configuration failure is retried");
    assert_eq!(h.seen().len(), 4);
}

/// Lesson control: sends `action` at `after` (tokio time from the start) and returns the
/// service's answer.
async fn control_at(
    tx: &tokio::sync::mpsc::Sender<ServiceCommand>,
    after: Duration,
    action: polypush::schedule::ControlAction,
) -> polypush::status::ControlReply {
    tokio::time::sleep_until(Instant::now() + after).await;
    let (req, rx) = polypush::status::ControlRequest::new(action, "test");
    tx.send(ServiceCommand::Control(req)).await.unwrap();
    rx.await.unwrap()
}

fn spans(h: &Harness) -> Vec<(Duration, Option<Duration>)> {
    h.seen().iter().map(|s| (s.started, s.stopped)).collect()
}

/// 08:00-08:30 and 09:00-09:05 UTC; the clock starts at 07:59:50.
const TWO_WINDOWS: &str =
    "[[schedule]]\ndate = \"2030-03-04\"\nstart = \"08:00\"\nend = \"08:30\"\ntimezone = \"UTC\"\n\
     [[schedule]]\ndate = \"2030-03-04\"\nstart = \"09:00\"\nend = \"09:05\"\ntimezone = \"UTC\"\n";

#[tokio::test(start_paused = true)]
async fn extend_keeps_the_broadcast_past_the_end_and_stops_it_at_the_new_end() {
    use polypush::schedule::ControlAction::Extend;
    let h = Harness::new(TWO_WINDOWS);
    let (tx, rx) = command_channel();
    let driver = tokio::spawn(async move {
        // Outside a window: refused, saying to start now.
        let r = control_at(&tx, 5 * S, Extend { minutes: 15 }).await;
        assert!(r.unwrap_err().to_string().contains("start now"));
        // 08:20 (1210 s in): 15 minutes more, to 08:45.
        let r = control_at(&tx, 1205 * S, Extend { minutes: 15 })
            .await
            .unwrap();
        assert_eq!(
            r.why,
            polypush::schedule::Why::Extended,
            "the override decides the end"
        );
        assert_eq!(r.control.unwrap().until, wall_start() + 10 * S + 2700 * S);
        tx
    });
    h.service(true)
        .run(load(&h.config), h.options(Some(3 * 3600 * S)), rx)
        .await
        .unwrap();
    let _tx = driver.await.unwrap();
    assert_eq!(
        spans(&h),
        [
            (10 * S, Some(10 * S + 2700 * S)),
            (10 * S + 3600 * S, Some(10 * S + 3900 * S)),
        ],
        "on past 08:30 to 08:45 to the second, then the next window as usual"
    );
}

#[tokio::test(start_paused = true)]
async fn stop_now_stops_it_and_the_next_window_starts_it_again() {
    let h = Harness::new(TWO_WINDOWS);
    let (tx, rx) = command_channel();
    let driver = tokio::spawn(async move {
        let r = control_at(&tx, 610 * S, polypush::schedule::ControlAction::StopNow).await;
        assert!(!r.unwrap().on);
        tx
    });
    h.service(true)
        .run(load(&h.config), h.options(Some(2 * 3600 * S)), rx)
        .await
        .unwrap();
    let _tx = driver.await.unwrap();
    assert_eq!(
        spans(&h),
        [
            (10 * S, Some(610 * S)),
            (10 * S + 3600 * S, Some(10 * S + 3900 * S)),
        ],
        "stopped at 08:10, nothing until 09:00"
    );
}

#[tokio::test(start_paused = true)]
async fn start_now_starts_a_broadcast_outside_every_window() {
    let h = Harness::new(TWO_WINDOWS);
    let (tx, rx) = command_channel();
    let driver = tokio::spawn(async move {
        // 08:40: start now, through to the 09:00 window and on to its end at 09:05.
        let r = control_at(&tx, 2410 * S, polypush::schedule::ControlAction::StartNow).await;
        let r = r.unwrap();
        assert_eq!((r.on, r.why), (true, polypush::schedule::Why::StartedNow));
        tx
    });
    h.service(true)
        .run(load(&h.config), h.options(Some(2 * 3600 * S)), rx)
        .await
        .unwrap();
    let _tx = driver.await.unwrap();
    assert_eq!(
        spans(&h),
        [
            (10 * S, Some(1810 * S)),
            (2410 * S, Some(10 * S + 3900 * S)),
        ],
        "one broadcast from 08:40 through the 09:00 window, no restart at 09:00"
    );
}

#[tokio::test(start_paused = true)]
async fn an_override_survives_a_restart_of_the_service() {
    let h = Harness::new(TWO_WINDOWS);
    let state = tempfile::tempdir().unwrap();
    let opts = |d| ServiceOptions {
        state_dir: Some(state.path().to_path_buf()),
        ..h.options(Some(d))
    };
    // First run: extend by 30 min at 08:10, then the service stops at 08:20.
    let (tx, rx) = command_channel();
    let driver = tokio::spawn(async move {
        let r = control_at(
            &tx,
            610 * S,
            polypush::schedule::ControlAction::Extend { minutes: 30 },
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
        tx
    });
    h.service(true)
        .run(load(&h.config), opts(1210 * S), rx)
        .await
        .unwrap();
    drop(driver.await.unwrap());
    let saved = std::fs::read_to_string(state.path().join("control.json")).unwrap();
    assert!(
        saved.contains("\"until\": \"2030-03-04T09:00:00Z\""),
        "{saved}"
    );

    // A new service instance at 08:20 reads it: on until 09:00 (not 08:30), and the 09:00
    // window follows without a break, to 09:05.
    let (_tx, rx) = command_channel();
    h.service(true)
        .run(load(&h.config), opts(3600 * S), rx)
        .await
        .unwrap();
    assert_eq!(
        spans(&h),
        [
            (10 * S, Some(1210 * S)),
            (1210 * S, Some(10 * S + 3900 * S)),
        ]
    );
    assert!(
        !state.path().join("control.json").exists(),
        "dropped once it ended"
    );
}
