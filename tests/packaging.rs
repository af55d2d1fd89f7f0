//! The systemd packaging (`packaging/polypush.service`, `.sysusers`, `.tmpfiles`) checked with
//! systemd's own tools, and the default config checked the way the unit runs it.
//!
//! Every test skips with a message where the systemd tool it needs is not installed (Debian
//! package `systemd`). `cargo test --test packaging -- --nocapture` prints the security table.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/polypush.service");
const SYSUSERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/polypush.sysusers");
const TMPFILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/polypush.tmpfiles");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/polypush.toml");
const BIN: &str = env!("CARGO_BIN_EXE_polypush");

/// The exposure the issue allows.
const MAX_EXPOSURE: f64 = 1.5;

/// Exposures `systemd-analyze security` may report for the unit, each accepted for the reason
/// given in packaging/README.md. Anything else is a regression.
const ACCEPTED_EXPOSURES: &[&str] = &[
    "RootDirectory=/RootImage=", // FFmpeg, x264 and ALSA come from the host
    "SupplementaryGroups=",      // video, audio own the device nodes
    "PrivateDevices=",           // would hide /dev/video* and /dev/snd/*
    "RestrictAddressFamilies=~AF_UNIX", // sd_notify, the journal
    "RestrictAddressFamilies=~AF_(INET|INET6)", // Polyv, the ingest, the status server
    "PrivateNetwork=",           // the same
    "DeviceAllow=",              // camera, sound, media, dma_heap (and rtc r)
    "IPAddressDeny=",            // the ingest can be any address
    "UMask=",                    // 0027: recordings readable by group polypush
];

/// Where `name` is on PATH, if anywhere.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The tool, or a message saying why the test is skipped.
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = which(name);
    if found.is_none() {
        eprintln!("{test}: SKIPPED: `{name}` is not installed (Debian package `systemd`)");
    }
    found
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch directory next to the build output, so hard links to the binary work.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// `from` at `to`: a hard link where possible (the debug binary is large), else a copy.
fn link_or_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

/// The unit as (section, key, value) entries, in file order.
fn unit_entries() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(UNIT).unwrap();
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        assert!(!line.ends_with('\\'), "keep unit lines unbroken: {line}");
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line}"));
        entries.push((section.clone(), key.trim().into(), value.trim().into()));
    }
    entries
}

/// Every value of `key` in `section`.
fn values(entries: &[(String, String, String)], section: &str, key: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.clone())
        .collect()
}

/// The single value of `key` in `[Service]`.
fn service(entries: &[(String, String, String)], key: &str) -> String {
    let v = values(entries, "Service", key);
    assert_eq!(
        v.len(),
        1,
        "[Service] {key}= must be set exactly once: {v:?}"
    );
    v[0].clone()
}

/// `90s`, `1min 30s`, `2min` as seconds (the forms this unit uses).
fn seconds(span: &str) -> u64 {
    span.split_whitespace()
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            let n: u64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("time span {span:?}"));
            match &part[digits.len()..] {
                "" | "s" | "sec" => n,
                "min" | "m" => n * 60,
                "h" => n * 3600,
                unit => panic!("time unit {unit:?} in {span:?}"),
            }
        })
        .sum()
}

/// `systemd-analyze verify` on the real unit file, in a scratch root that has what the unit
/// names: the built binary at /usr/bin/polypush, an executable /bin/kill, the host's unit
/// directory (for network-online.target, time-sync.target, multi-user.target and their
/// dependencies) and the man page `polypush man` generates (for `Documentation=`).
///
/// `--root` is what lets the real unit be verified unchanged: without it, verify complains
/// that /usr/bin/polypush does not exist on a build machine. No output line is harmless,
/// except warnings about the host's own units pulled in as dependencies (not ours to fix).
#[test]
fn unit_verifies_clean() {
    let Some(analyze) = tool("systemd-analyze", "unit_verifies_clean") else {
        return;
    };
    let Some(host_units) = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("multi-user.target").is_file())
    else {
        eprintln!("unit_verifies_clean: SKIPPED: no systemd unit directory on this host");
        return;
    };
    let dir = scratch();
    let root = dir.path().join("root");
    let units = root.join("usr/lib/systemd");
    std::fs::create_dir_all(&units).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(host_units)
        .arg(&units)
        .status()
        .unwrap();
    assert!(cp.success(), "copying {} failed", host_units.display());
    let etc_unit = root.join("etc/systemd/system/polypush.service");
    std::fs::create_dir_all(etc_unit.parent().unwrap()).unwrap();
    std::fs::copy(UNIT, &etc_unit).unwrap();
    link_or_copy(Path::new(BIN), &root.join("usr/bin/polypush"));
    // ExecReload=/bin/kill: merged /usr as on Debian 12, any executable will do.
    let kill = root.join("usr/bin/kill");
    std::fs::write(&kill, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&kill, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();

    let mut cmd = Command::new(&analyze);
    cmd.arg("verify").arg("--root").arg(&root);
    if which("man").is_some() {
        let man1 = dir.path().join("man/man1");
        std::fs::create_dir_all(&man1).unwrap();
        let page = Command::new(BIN).arg("man").output().unwrap();
        assert!(page.status.success(), "polypush man failed");
        std::fs::write(man1.join("polypush.1"), &page.stdout).unwrap();
        cmd.env("MANPATH", dir.path().join("man"));
    } else {
        eprintln!("unit_verifies_clean: `man` is not installed: Documentation= not checked");
        cmd.arg("--man=no");
    }
    let out = cmd
        .arg("/etc/systemd/system/polypush.service")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    let mut problems = Vec::new();
    for line in stdout.lines().chain(stderr.lines()) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let ours = line.contains("polypush.service") || !line.contains("/lib/systemd/system/");
        if ours {
            problems.push(line.to_string());
        } else {
            eprintln!("unit_verifies_clean: about a host unit, ignored: {line}");
        }
    }
    assert!(
        problems.is_empty() && out.status.success(),
        "systemd-analyze verify is not clean ({}):\n{}",
        out.status,
        problems.join("\n")
    );
    eprintln!("unit_verifies_clean: `systemd-analyze verify` printed nothing");
}

/// `systemd-analyze security --offline=yes` on the unit: the score must be 1.5 or less, and
/// every exposure left must be one of those packaging/README.md accepts.
#[test]
fn security_exposure_is_at_most_1_5() {
    let Some(analyze) = tool("systemd-analyze", "security_exposure_is_at_most_1_5") else {
        return;
    };
    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "--no-pager", UNIT])
        .env("SYSTEMD_COLORS", "0")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    eprintln!("{stdout}");
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze security complained:\n{stderr}"
    );
    let score_line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for polypush.service:"))
        .unwrap_or_else(|| panic!("no overall exposure line in:\n{stdout}"));
    let score: f64 = score_line
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score from {score_line:?}"));
    eprintln!(
        "exposure of polypush.service: {score} (at most {MAX_EXPOSURE} allowed; no hardening: 9.6)"
    );
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} is above {MAX_EXPOSURE}: {score_line}"
    );

    let exposed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('✗'))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert!(
        exposed.contains(&"PrivateNetwork="),
        "the table was not read (no ✗ PrivateNetwork= row):\n{stdout}"
    );
    let unexpected: Vec<&str> = exposed
        .into_iter()
        .filter(|name| !ACCEPTED_EXPOSURES.contains(name))
        .collect();
    assert!(
        unexpected.is_empty(),
        "exposures not accepted in packaging/README.md (fix the unit, or justify them there and \
         in ACCEPTED_EXPOSURES): {unexpected:?}"
    );
}

/// The directives the issue asks for, and the paths and names the daemon's code uses.
#[test]
fn unit_has_the_required_directives() {
    let e = unit_entries();
    let config = polypush::config::DEFAULT_PATH;

    assert_eq!(service(&e, "Type"), "notify");
    assert_eq!(service(&e, "NotifyAccess"), "main");
    assert_eq!(
        service(&e, "ExecStart"),
        format!("/usr/bin/polypush --config {config} run")
    );
    let pre = service(&e, "ExecStartPre");
    assert_eq!(
        pre,
        format!("-/usr/bin/polypush --config {config} check"),
        "ExecStartPre runs `check` on the same config; the `-` keeps a config error from \
         restarting forever (RestartPreventExitStatus= does not see ExecStartPre=)"
    );
    let reload = values(&e, "Service", "ExecReload");
    assert_eq!(
        reload,
        [
            format!("/usr/bin/polypush --config {config} check"),
            "/bin/kill -HUP $MAINPID".to_string()
        ]
    );

    assert_eq!(service(&e, "Restart"), "on-failure");
    let prevent = service(&e, "RestartPreventExitStatus");
    let prevent: Vec<&str> = prevent.split_whitespace().collect();
    assert!(prevent.contains(&"2"), "config errors must not restart");
    assert!(
        !prevent.contains(&"3") && !prevent.contains(&"4") && !prevent.contains(&"5"),
        "rejections, the network and devices can recover: restart them ({prevent:?})"
    );
    assert_eq!(seconds(&service(&e, "RestartSec")), 5);
    // The daemon sends READY=1 at the first publish, or 60 s after a live start at the latest.
    assert!(seconds(&service(&e, "TimeoutStartSec")) > 60);
    assert!(seconds(&service(&e, "TimeoutStopSec")) >= 20);
    assert_eq!(seconds(&service(&e, "WatchdogSec")), 30);
    assert_eq!(values(&e, "Unit", "StartLimitIntervalSec"), ["0"]);

    assert_eq!(service(&e, "User"), "polypush");
    assert_eq!(service(&e, "Group"), "polypush");
    assert!(values(&e, "Service", "DynamicUser").is_empty());
    let groups = service(&e, "SupplementaryGroups");
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert!(
        groups.contains(&"video") && groups.contains(&"audio"),
        "{groups:?}"
    );
    assert_eq!(service(&e, "StateDirectory"), "polypush");

    let cred = service(&e, "LoadCredential");
    assert_eq!(
        cred,
        format!(
            "{}:/etc/polypush/password",
            polypush::platform::CREDENTIAL_PASSWORD
        )
    );

    assert_eq!(service(&e, "PrivateDevices"), "no");
    assert_eq!(service(&e, "DevicePolicy"), "closed");
    let allow = values(&e, "Service", "DeviceAllow");
    for class in ["char-video4linux rw", "char-alsa rw"] {
        assert!(
            allow.iter().any(|a| a == class),
            "DeviceAllow={class} missing"
        );
    }

    let families = service(&e, "RestrictAddressFamilies");
    let families: Vec<&str> = families.split_whitespace().collect();
    for f in ["AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(
            families.contains(&f),
            "{f} missing: outbound TCP and sd_notify need it"
        );
    }
    assert!(
        values(&e, "Service", "IPAddressDeny").is_empty(),
        "the ingest can be any address"
    );
    let filters = values(&e, "Service", "SystemCallFilter");
    assert!(
        filters.iter().any(|f| f == "@system-service"),
        "{filters:?}"
    );

    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(service(&e, key), value, "{key}=");
    }
    assert_eq!(values(&e, "Install", "WantedBy"), ["multi-user.target"]);
}

/// The sysusers and tmpfiles snippets applied to an empty scratch root, as a package install
/// does: the user, its groups, and the directories with their owners and modes.
#[test]
fn sysusers_and_tmpfiles_apply_in_a_scratch_root() {
    let test = "sysusers_and_tmpfiles_apply_in_a_scratch_root";
    let Some(sysusers) = tool("systemd-sysusers", test) else {
        return;
    };
    let dir = scratch();
    let root = dir.path();
    // A package-installed /etc/polypush with the wrong modes, which tmpfiles must correct.
    let etc = root.join("etc/polypush");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("password"), "secret\n").unwrap();
    std::fs::write(etc.join("polypush.toml"), "").unwrap();
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    mode(&etc, 0o755);
    mode(&etc.join("password"), 0o644);
    mode(&etc.join("polypush.toml"), 0o600);

    let out = Command::new(sysusers)
        .arg("--root")
        .arg(root)
        .arg(SYSUSERS)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    let odd: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Creating "))
        .collect();
    assert!(
        out.status.success() && odd.is_empty(),
        "systemd-sysusers: {}\n{stdout}{stderr}",
        out.status
    );

    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("polypush:"))
        .unwrap_or_else(|| panic!("no polypush user in\n{passwd}"))
        .split(':')
        .collect();
    assert_eq!(user[5], "/var/lib/polypush", "home = the StateDirectory");
    assert!(user[6].ends_with("nologin"), "no login shell: {}", user[6]);
    let (uid, gid): (u32, u32) = (user[2].parse().unwrap(), user[3].parse().unwrap());
    assert!(uid < 1000, "a system user: {uid}");

    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let members = |name: &str| -> Vec<String> {
        let line = group
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no group {name} in\n{group}"));
        line.rsplit(':')
            .next()
            .unwrap()
            .split(',')
            .map(String::from)
            .collect()
    };
    // The unit's SupplementaryGroups= name groups that exist, and the user is in them.
    let e = unit_entries();
    for g in service(&e, "SupplementaryGroups").split_whitespace() {
        assert!(
            members(g).contains(&"polypush".to_string()),
            "polypush not in {g}"
        );
    }
    assert_eq!(
        group
            .lines()
            .find(|l| l.starts_with("polypush:"))
            .and_then(|l| l.split(':').nth(2))
            .and_then(|g| g.parse::<u32>().ok()),
        Some(gid)
    );

    let Some(tmpfiles) = tool("systemd-tmpfiles", test) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{test}: tmpfiles part SKIPPED: setting owners needs root");
        return;
    }
    let out = Command::new(tmpfiles)
        .arg("--root")
        .arg(root)
        .arg("--create")
        .arg(TMPFILES)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "systemd-tmpfiles: {}\n{stdout}{stderr}",
        out.status
    );
    use std::os::unix::fs::MetadataExt;
    let expect = |rel: &str, want_mode: u32, want_uid: u32, want_gid: u32| {
        let m = std::fs::metadata(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (want_mode, want_uid, want_gid),
            "{rel}: mode, uid, gid"
        );
    };
    expect("etc/polypush", 0o750, 0, gid);
    expect("etc/polypush/password", 0o600, 0, 0);
    expect("etc/polypush/polypush.toml", 0o640, 0, gid);
    expect("var/lib/polypush", 0o750, uid, gid);
    expect("var/lib/polypush/recordings", 0o750, uid, gid);
}

/// The default config, checked the way the unit runs it: `polypush check` with the password
/// as the systemd credential in `$CREDENTIALS_DIRECTORY` (the service user cannot read
/// /etc/polypush/password). The password must come from the credential, and the recordings
/// must land inside the unit's StateDirectory (the only writable place in the sandbox).
#[test]
fn default_config_fits_the_unit() {
    let e = unit_entries();
    let cred = service(&e, "LoadCredential");
    let (id, _) = cred.split_once(':').unwrap();
    let creds = scratch();
    std::fs::write(creds.path().join(id), "from-the-credential\n").unwrap();

    let out = Command::new(BIN)
        .args(["--config", CONFIG, "--json", "check"])
        .env("CREDENTIALS_DIRECTORY", creds.path())
        .env_remove("POLYPUSH_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "`polypush check` on packaging/polypush.toml fails under the unit ({}): {stderr}\n\
         The unit hands the password over as the credential {id}; the service user cannot \
         read /etc/polypush/password, so packaging/polypush.toml must leave password_file \
         (and password) unset.",
        out.status
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let cfg = &v["config"];
    assert_eq!(
        cfg["polyv"]["password"], "***",
        "the password must come from the credential: {stdout}"
    );
    assert!(cfg["polyv"]["password_file"].is_null(), "{stdout}");

    let state = format!("/var/lib/{}", service(&e, "StateDirectory"));
    let dir = cfg["record"]["dir"].as_str().unwrap();
    assert!(
        Path::new(dir).starts_with(&state),
        "record.dir {dir} must be inside the StateDirectory {state}"
    );
    let device = cfg["video"]["device"].as_str().unwrap();
    assert!(
        device.starts_with("/dev/video"),
        "{device}: DeviceAllow= covers V4L2 nodes"
    );
    let listen = cfg["status"]["listen"].as_str().unwrap();
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        port >= 1024,
        "status port {port} would need CAP_NET_BIND_SERVICE"
    );
}
