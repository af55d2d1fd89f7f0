//! The recording directory check (`record`): the directory created if missing, a probe file
//! written, fsynced and deleted, and the free space against the reserve plus one segment.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use super::{blocking, Blocking, Check};
use crate::config::Config;
use crate::encode::AudioSource;
use crate::exit::ExitCode;

/// The recording directory check's bound (a hung network file system).
const RECORD_LIMIT: Duration = Duration::from_secs(10);
/// Bytes written (and fsynced) to the probe file in the recording directory.
const PROBE_BYTES: usize = 64 * 1024;

/// Creates the probe file, writes and fsyncs it, deletes it.
pub(super) fn probe_write(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(".polypush-selftest-{}", std::process::id()));
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&probe)
        .and_then(|mut f| {
            f.write_all(&[0u8; PROBE_BYTES])?;
            f.sync_all()
        });
    let removed = fs::remove_file(&probe);
    result?;
    removed
}

const MIB: u64 = 1 << 20;

fn record_check(cfg: &Config) -> Check {
    let r = &cfg.record;
    let dir = r.dir.clone();
    let writable_fix = format!(
        "make {} writable by the user polypush runs as (chown polypush {0}; under systemd StateDirectory=polypush covers /var/lib/polypush), check its file system is not mounted read-only, or set record.dir",
        dir.display()
    );
    let mut created = false;
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Check::fail(
                "record",
                ExitCode::Config,
                format!("{} exists but is not a directory", dir.display()),
                "set record.dir to a directory",
            )
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Err(e) = DirBuilder::new().recursive(true).mode(0o750).create(&dir) {
                return Check::fail(
                    "record",
                    ExitCode::Config,
                    format!("cannot create {}: {e}", dir.display()),
                    writable_fix,
                );
            }
            created = true;
        }
        Err(e) => {
            return Check::fail(
                "record",
                ExitCode::Config,
                format!("cannot look at {}: {e}", dir.display()),
                writable_fix,
            )
        }
    }
    if let Err(e) = probe_write(&dir) {
        return Check::fail(
            "record",
            ExitCode::Config,
            format!("{} is not writable: {e}", dir.display()),
            writable_fix,
        );
    }
    let free = match crate::record::free_bytes(&dir) {
        Ok(f) => f,
        Err(e) => {
            return Check::fail(
                "record",
                ExitCode::Config,
                format!("cannot tell the free space of {}: {e}", dir.display()),
                writable_fix,
            )
        }
    };
    let audio_kbps = if cfg.audio.source == AudioSource::None {
        0
    } else {
        u64::from(cfg.audio.bitrate_kbps)
    };
    let kbps = u64::from(cfg.video.bitrate_kbps) + audio_kbps;
    let segment = (kbps * 1000 / 8).saturating_mul(r.segment_s);
    let reserve = r.min_free_mb.saturating_mul(MIB);
    let need = reserve.saturating_add(segment);
    let numbers = format!(
        "{} MiB free; needs {} MiB reserve (record.min_free_mb) + {} MiB for one {} s segment at {kbps} kbit/s",
        free / MIB,
        r.min_free_mb,
        segment.div_ceil(MIB),
        r.segment_s
    );
    if free < need {
        return Check::fail(
            "record",
            ExitCode::Config,
            format!("{}: {numbers}", dir.display()),
            "free space on that file system, put record.dir on a larger disk, or lower record.min_free_mb or record.segment_s",
        );
    }
    Check::pass(
        "record",
        format!(
            "{} {}writable (probe written, fsynced, deleted); {numbers}",
            dir.display(),
            if created { "created and " } else { "" }
        ),
    )
}

pub(super) async fn check_record(cfg: &Config) -> Check {
    if !cfg.record.enabled {
        return Check::not_needed("record", "not enabled ([record] enabled = false)");
    }
    let dir = cfg.record.dir.clone();
    let cfg = cfg.clone();
    match blocking(RECORD_LIMIT, move || record_check(&cfg)).await {
        Blocking::Done(c) => c,
        Blocking::TimedOut => Check::fail(
            "record",
            ExitCode::Config,
            format!(
                "{}: writing a probe file took longer than {} s",
                dir.display(),
                RECORD_LIMIT.as_secs()
            ),
            "the disk (or network file system) behind record.dir hangs: check it, or set record.dir to a local disk",
        ),
        Blocking::Failed(m) => Check::fail(
            "record",
            ExitCode::Config,
            format!("{}: {m}", dir.display()),
            "set record.dir to a writable directory",
        ),
    }
}
