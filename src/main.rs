//! The `polypush` command: parses the command line, loads the config, runs one command and
//! maps every failure to one actionable line on stderr and an exit code
//! ([`polypush::exit::ExitCode`]: 0 ok, 1 internal, 2 usage/config, 3 refused, 4 unavailable,
//! 5 capture device or encoder).

mod cli;

use clap::{CommandFactory, Parser};
use cli::{ChannelCommand, Cli, Command};
use polypush::broadcast::{RunError, RunOptions};
use polypush::config::{Config, ConfigError};
use polypush::exit::ExitCode;
use polypush::platform::types::*;
use polypush::platform::{PlatformError, PolyvClient};
use polypush::secret::Secret;
use polypush::setting::InvalidSetting;
use serde_json::{json, Value};
use std::io::{Read, Write};

/// Why a command failed; decides the exit code.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Setting(#[from] InvalidSetting),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Run(#[from] RunError),
    /// The running service (lesson control) did not do it.
    #[error("{message}")]
    Service { message: String, code: ExitCode },
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config(_) | Self::Setting(_) | Self::Usage(_) => ExitCode::Config,
            Self::Platform(e) => e.exit_code(),
            Self::Run(e) => e.exit_code(),
            Self::Service { code, .. } => *code,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) | Self::Setting(_) => "config",
            Self::Usage(_) => "usage",
            Self::Platform(e) => e.kind(),
            Self::Run(e) => e.kind(),
            Self::Service { .. } => "service",
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref().unwrap_or("warn"));
    let json_out = cli.json;
    // Multi-threaded: `run` blocks in place while the encode threads start and stop.
    let result = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(Failure::Usage(format!(
            "cannot start the async runtime: {e}"
        ))),
    };
    // Repeats the rate limiter still holds back get their summary line before the exit.
    polypush::logging::flush();
    match result {
        Ok(()) => ExitCode::Ok.into(),
        Err(f) => {
            if json_out {
                print_json(
                    &json!({"error": {"kind": f.kind(), "message": f.to_string(), "exit_code": f.exit_code().code()}}),
                );
            }
            eprintln!("polypush: error: {f}");
            f.exit_code().into()
        }
    }
}

fn init_logging(level: &str) {
    // RUST_LOG wins over `level`; the journal under systemd, stderr otherwise.
    polypush::logging::init(level);
}

fn print_json(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
}

/// Prints either the JSON value or the human lines.
fn emit(json_out: bool, v: Value, human: impl FnOnce() -> String) {
    if json_out {
        print_json(&v);
    } else {
        println!("{}", human());
    }
}

fn shown(secret: &Secret, reveal: bool) -> String {
    if reveal {
        secret.expose().to_string()
    } else {
        secret.to_string()
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let j = cli.json;
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "polypush",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| Failure::Usage(format!("cannot write the man page: {e}"))),
        Command::Run {
            url,
            test_pattern,
            duration,
            stats_file,
        } => {
            let cfg = Config::load(&cli.config)?;
            // The service logs at the config's level unless --log-level (or RUST_LOG) says.
            if cli.log_level.is_none() {
                if let Err(e) = polypush::logging::set_level(&cfg.log.level) {
                    return Err(Failure::Usage(format!("log.level: {e}")));
                }
            }
            let duration = match duration {
                Some(d) if d.is_finite() && d > 0.0 => Some(std::time::Duration::from_secs_f64(d)),
                Some(d) => {
                    return Err(Failure::Usage(format!(
                        "--duration {d}: give a positive number of seconds"
                    )))
                }
                None => None,
            };
            let state_dir = cfg.service.state_dir.clone();
            let daemon = polypush::service::run(
                cfg,
                polypush::service::ServiceOptions {
                    config_path: cli.config.clone(),
                    log_level_from_config: cli.log_level.is_none(),
                    run: RunOptions {
                        url,
                        test_pattern,
                        status_line: !j,
                        stats_file,
                    },
                    duration,
                    state_dir: Some(state_dir),
                },
            )
            .await?;
            let Some(summary) = daemon.last else {
                emit(
                    j,
                    json!({ "elapsed_s": daemon.elapsed.as_secs_f64(), "broadcasts": 0 }),
                    || {
                        format!(
                            "stopped after {:.1} s without a broadcast (no schedule window opened)",
                            daemon.elapsed.as_secs_f64()
                        )
                    },
                );
                return Ok(());
            };
            let dropped = summary.ring.dropped.total();
            emit(
                j,
                json!({
                    "elapsed_s": summary.elapsed.as_secs_f64(),
                    "video_frames_encoded": summary.pipeline.video.frames_encoded,
                    "audio_frames_encoded": summary.pipeline.audio.frames_encoded,
                    "bytes_sent": summary.bytes_sent,
                    "dropped_packets": dropped.packets,
                    "reconnects": summary.reconnects,
                    "broadcasts": daemon.broadcasts,
                }),
                || {
                    format!(
                        "stopped after {:.1} s: {} video frames, {} audio frames encoded, {} bytes sent, {} packets dropped",
                        summary.elapsed.as_secs_f64(),
                        summary.pipeline.video.frames_encoded,
                        summary.pipeline.audio.frames_encoded,
                        summary.bytes_sent,
                        dropped.packets
                    )
                },
            );
            Ok(())
        }
        Command::Devices => {
            let devices = polypush::capture::list_devices();
            if j {
                print_json(&serde_json::to_value(&devices).unwrap_or(Value::Null));
            } else {
                println!("{devices}");
            }
            Ok(())
        }
        Command::Schedule { count, from } => {
            let cfg = Config::load(&cli.config)?;
            let now = from.unwrap_or_else(std::time::SystemTime::now);
            let schedule = polypush::schedule::Schedule::from_config(&cfg.schedule)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            // The override the service keeps (readable by root and the polypush group).
            let ov = polypush::service::StateFile::in_dir(&cfg.service.state_dir).load(now);
            println!(
                "{}",
                polypush::schedule::render(&schedule, now, count as usize, j, ov.as_ref())
            );
            Ok(())
        }
        Command::Extend { minutes } => {
            control(
                &cli.config,
                j,
                "extend",
                json!({"minutes": minutes, "by": "cli"}),
            )
            .await
        }
        Command::StartNow => control(&cli.config, j, "start", json!({"by": "cli"})).await,
        Command::StopNow => control(&cli.config, j, "stop", json!({"by": "cli"})).await,
        Command::Lessons { since } => {
            let cfg = Config::load(&cli.config)?;
            let log = polypush::lessons::LessonLog::new(
                &cfg.service.state_dir,
                cfg.service.lessons_max_bytes,
            );
            let read = log.read().map_err(|e| {
                Failure::Usage(format!(
                    "cannot read the lesson log in {}: {e}; run as root or as the polypush user, or check [service] state_dir",
                    log.dir().display()
                ))
            })?;
            if read.skipped > 0 {
                eprintln!(
                    "polypush: {} line(s) of the lesson log did not parse and were skipped",
                    read.skipped
                );
            }
            let tz = polypush::lessons::local_zone();
            print!(
                "{}",
                polypush::lessons::render(&read.lessons, since, j, &tz)
            );
            Ok(())
        }
        Command::Check => {
            let cfg = Config::load(&cli.config)?;
            let effective = toml::Value::try_from(&cfg)
                .ok()
                .and_then(|v| serde_json::to_value(v).ok())
                .unwrap_or(Value::Null);
            emit(
                j,
                json!({"ok": true, "config_file": cli.config, "config": effective}),
                || format!("{}: OK\n\n{cfg}", cli.config.display()),
            );
            Ok(())
        }
        Command::Selftest { url } => {
            let report = polypush::selftest::run(&polypush::selftest::Options {
                config: cli.config.clone(),
                url,
            })
            .await;
            if j {
                print_json(&report.to_json());
            } else {
                print!("{}", report.render());
            }
            // The table (or JSON) already says what failed and what to do: exit with the
            // first failure's code without a second error line or JSON document.
            match report.exit_code() {
                ExitCode::Ok => Ok(()),
                code => {
                    polypush::logging::flush();
                    let _ = std::io::stdout().flush();
                    std::process::exit(i32::from(code.code()))
                }
            }
        }
        Command::Login { reveal } => {
            let cfg = Config::load(&cli.config)?;
            cfg.polyv.password()?;
            let client = PolyvClient::from_config(&cfg.polyv)?;
            let reply = client.teacher_login().await?;
            let addr = reply.push_address();
            let url = if reveal { addr.reveal() } else { addr.masked() };
            emit(
                j,
                json!({
                    "channel_id": cfg.polyv.channel_id,
                    "push_url": url,
                    "url_protected": reply.is_url_protected,
                    "max_rate_kbps": reply.max_rate,
                    "audio_only": reply.is_only_audio,
                    "scene": reply.live_scene,
                }),
                || {
                    let mut s = format!("push address: {url}");
                    if let Some(rate) = reply.max_rate {
                        s.push_str(&format!("\nmax bitrate:  {rate} kbit/s"));
                    }
                    if !reveal {
                        s.push_str("\n(stream key masked; --reveal prints it)");
                    }
                    s
                },
            );
            Ok(())
        }
        Command::Viewers => {
            let cfg = Config::load(&cli.config)?;
            let client = PolyvClient::from_config(&cfg.polyv)?;
            let v = client.viewers().await?;
            emit(
                j,
                json!({"channel_id": cfg.polyv.channel_id, "viewers": v.count}),
                || {
                    format!(
                        "{} viewer(s) online in channel {}",
                        v.count, cfg.polyv.channel_id
                    )
                },
            );
            Ok(())
        }
        Command::Channel(cmd) => {
            let cfg = Config::load(&cli.config)?;
            channel(j, &cfg, cmd).await
        }
    }
}

/// Lesson control: asks the running service through its status server (`POST /extend`,
/// `/start`, `/stop`) with the configured token, and prints its answer.
async fn control(
    config: &std::path::Path,
    j: bool,
    route: &str,
    body: Value,
) -> Result<(), Failure> {
    let cfg = Config::load(config)?;
    if !cfg.status.enabled {
        return Err(Failure::Usage(format!(
            "status.enabled is false: `polypush` reaches the running service through its status server; set enabled = true under [status] in {} and restart the service",
            config.display()
        )));
    }
    let mut addr = cfg.status.listen_addr()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let token = cfg.status_token(config)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .map_err(|e| Failure::Usage(format!("cannot make an HTTP client: {e}")))?;
    let mut req = client.post(format!("http://{addr}/{route}")).json(&body);
    if let Some(t) = &token {
        req = req.bearer_auth(t.expose());
    }
    let unavailable = |message: String| Failure::Service {
        message,
        code: ExitCode::Unavailable,
    };
    let resp = req.send().await.map_err(|e| {
        unavailable(if e.is_connect() {
            format!("the service is not running: nothing answers at {addr} (status.listen); start it (systemctl start polypush) and try again")
        } else {
            format!("the service at {addr} did not answer: {e}")
        })
    })?;
    let code = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if code.is_success() {
        emit(j, v.clone(), || {
            v["message"].as_str().unwrap_or("done").to_string()
        });
        return Ok(());
    }
    let message = v["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| match code.as_u16() {
            401 | 403 => format!("the service at {addr} refused the token: check status.token_file (run as a user who can read it, such as with sudo)"),
            404 => format!("the service at {addr} does not know lesson control: update polypush and restart it"),
            c => format!("the service at {addr} answered HTTP {c}"),
        });
    Err(match code.as_u16() {
        409 => Failure::Service {
            message,
            code: ExitCode::Refused,
        },
        400 => Failure::Usage(message),
        401 | 403 => Failure::Service {
            message,
            code: ExitCode::Refused,
        },
        _ => unavailable(message),
    })
}

async fn channel(j: bool, cfg: &Config, cmd: ChannelCommand) -> Result<(), Failure> {
    let client = PolyvClient::from_config(&cfg.polyv)?;
    // Everything but rename goes through the signed APIs.
    if !matches!(cmd, ChannelCommand::Rename { .. }) {
        cfg.polyv.app_credentials()?;
    }
    match cmd {
        ChannelCommand::Create {
            name,
            scene,
            object,
            start,
            end,
            reveal,
        } => {
            let created = client
                .create_channel(&CreateChannel {
                    name,
                    scene,
                    channel_object: object,
                    start_time_ms: start,
                    end_time_ms: end,
                })
                .await?;
            let r = reveal.reveal;
            let role = |l: &Option<RoleLogin>| {
                l.as_ref().map(|l| json!({"account": l.account, "password": shown(&l.passwd, r), "login_url": l.login_url}))
            };
            emit(
                j,
                json!({
                    "channel_id": created.channel_id,
                    "password": shown(&created.passwd, r),
                    "watch_url": created.watch_url,
                    "teacher_login_url": created.teacher_login_url,
                    "assistant": role(&created.assistant),
                    "guest": role(&created.guest),
                }),
                || {
                    let mut s = format!(
                        "created channel {}\npassword:  {}",
                        created.channel_id,
                        shown(&created.passwd, r)
                    );
                    if let Some(w) = &created.watch_url {
                        s.push_str(&format!("\nwatch url: {w}"));
                    }
                    if let Some(a) = &created.assistant {
                        s.push_str(&format!(
                            "\nassistant: {} / {}",
                            a.account,
                            shown(&a.passwd, r)
                        ));
                    }
                    if !r {
                        s.push_str("\n(passwords masked; --reveal prints them)");
                    }
                    s
                },
            );
        }
        ChannelCommand::Rename { name } => {
            client.rename_channel(&name).await?;
            emit(
                j,
                json!({"channel_id": client.channel_id(), "name": name}),
                || format!("channel {} renamed to {name:?}", client.channel_id()),
            );
        }
        ChannelCommand::Update {
            channel,
            name,
            password,
            publisher,
            max_viewers,
            auth_json,
        } => {
            let password = match password.as_deref() {
                Some("-") => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s).map_err(|e| {
                        Failure::Usage(format!("cannot read the password from stdin: {e}"))
                    })?;
                    Some(Secret::new(s.trim_end_matches(['\r', '\n'])))
                }
                Some(p) => Some(Secret::new(p)),
                None => None,
            };
            let auth_settings = match &auth_json {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        Failure::Usage(format!("--auth-json {}: cannot read: {e}", path.display()))
                    })?;
                    let v: Value = serde_json::from_str(&text).map_err(|e| {
                        Failure::Usage(format!(
                            "--auth-json {}: not valid JSON ({e}): it must hold the authSettings array",
                            path.display()
                        ))
                    })?;
                    if !v.is_array() {
                        return Err(Failure::Usage(format!(
                            "--auth-json {}: must hold a JSON array of watch conditions, such as [{{\"rank\":1,\"enabled\":\"N\",\"authType\":\"none\"}}]",
                            path.display()
                        )));
                    }
                    Some(v)
                }
                None => None,
            };
            let settings = UpdateSettings {
                basic_setting: BasicSetting {
                    name,
                    channel_passwd: password,
                    publisher,
                    max_viewer_restrict: max_viewers.map(|_| "Y"),
                    max_viewer: max_viewers,
                },
                auth_settings,
            };
            if settings.basic_setting.is_empty() && settings.auth_settings.is_none() {
                return Err(Failure::Usage(
                    "nothing to update: give at least one of --name, --password, --publisher, --max-viewers, --auth-json".into(),
                ));
            }
            let id = channel.unwrap_or_else(|| cfg.polyv.channel_id.clone());
            client.update_channel(&id, &settings).await?;
            emit(j, json!({"channel_id": id, "updated": true}), || {
                format!("channel {id} updated")
            });
        }
        ChannelCommand::CreateMr {
            name,
            start,
            channel_password,
            assistant_password,
            reveal,
        } => {
            let mr = client
                .create_mr_channel(&CreateMrChannel {
                    name,
                    start_time: start,
                    channel_passwd: channel_password.map(Secret::new),
                    assistant_passwd: assistant_password.map(Secret::new),
                })
                .await?;
            let r = reveal.reveal;
            emit(
                j,
                json!({
                    "channel_id": mr.channel_id,
                    "name": mr.name,
                    "channel_password": shown(&mr.channel_passwd, r),
                    "assistant_account": mr.assistant_account,
                    "assistant_password": shown(&mr.assistant_passwd, r),
                }),
                || {
                    let mut s = format!(
                        "created MR channel {} ({})\nconsole password:   {}\nassistant:          {} / {}",
                        mr.channel_id,
                        mr.name,
                        shown(&mr.channel_passwd, r),
                        mr.assistant_account,
                        shown(&mr.assistant_passwd, r)
                    );
                    if !r {
                        s.push_str("\n(passwords masked; --reveal prints them)");
                    }
                    s
                },
            );
        }
        ChannelCommand::PushUrl { channel, reveal } => {
            let id = channel.unwrap_or_else(|| cfg.polyv.channel_id.clone());
            let addr = client.push_url(&id).await?;
            let url = if reveal.reveal {
                addr.reveal()
            } else {
                addr.masked()
            };
            emit(j, json!({"channel_id": id, "push_url": url}), || {
                format!("push address of {id}: {url}")
            });
        }
        ChannelCommand::Status { ids } => {
            let ids = if ids.is_empty() {
                vec![cfg.polyv.channel_id.clone()]
            } else {
                ids
            };
            if let Some(bad) = ids
                .iter()
                .find(|i| i.is_empty() || !i.chars().all(|c| c.is_ascii_digit()))
            {
                return Err(Failure::Usage(format!(
                    "{bad:?} is not a channel id: use digits only"
                )));
            }
            let list = client.live_status(&ids).await?;
            emit(j, json!({"channels": list}), || {
                let mut s = String::new();
                for st in &list {
                    s.push_str(&format!("{}\t{}\n", st.channel_id, st.live_status));
                }
                for id in ids
                    .iter()
                    .filter(|id| !list.iter().any(|st| &st.channel_id == *id))
                {
                    s.push_str(&format!("{id}\tunknown\n"));
                }
                s.trim_end().to_string()
            });
        }
    }
    Ok(())
}
