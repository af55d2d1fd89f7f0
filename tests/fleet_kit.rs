//! The fleet kit in `deploy/` against polypush itself: every metric (and every label value
//! matched with `=`) that the alert rules, their unit tests and the Grafana dashboard use must
//! be one that `/metrics` serves, and the rules must pass `promtool check rules` and
//! `promtool test rules` (`prometheus.yml`: `promtool check config`) when `scripts/promtool.sh`
//! can provide promtool. Offline and fast apart from that script's first download.

mod common;

use common::status::broadcast;
use polypush::rtmp::SenderControl;
use polypush::rtmp::SenderPhase;
use polypush::status::metrics;
use polypush::status::{DaemonState, ScheduleStatus, StatusHub};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Series that are not polypush's but Prometheus's own (per scrape target).
const BUILT_IN: &[&str] = &[
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Labels that the scrape adds (job, instance) or the targets file sets, not polypush.
const TARGET_LABELS: &[&str] = &["job", "instance", "classroom", "site"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `/metrics` of a daemon in the middle of a scheduled, live broadcast with viewers known:
/// every series polypush can serve is there.
fn metrics_text() -> String {
    let hub = StatusHub::new();
    let now = SystemTime::now();
    hub.set_schedule(ScheduleStatus {
        configured: true,
        in_window: true,
        window_start: Some(now - Duration::from_secs(1800)),
        window_end: Some(now + Duration::from_secs(1800)),
        next_start: Some(now + Duration::from_secs(86_400)),
        next_end: Some(now + Duration::from_secs(86_400 + 3600)),
        title: Some("Physics".into()),
        ..ScheduleStatus::default()
    });
    hub.set_state(DaemonState::Live);
    hub.broadcast_started(SenderControl::new());
    hub.update_broadcast(broadcast(Instant::now(), SenderPhase::Publishing, None));
    hub.set_viewers(Some(42));
    hub.reload_applied();
    hub.set_lessons(common::status::lessons());
    metrics::text(&hub.snapshot())
}

/// What `/metrics` serves: metric name (as queried: counters with `_total`) → label name →
/// the values seen.
type Served = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn served(text: &str) -> Served {
    let mut out = Served::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let close = line.rfind('}').expect("closing brace");
            for (k, v) in parse_matchers(&line[end + 1..close]) {
                labels.entry(k).or_default().insert(v.1);
            }
        }
    }
    out
}

/// `a="x",b!~"y"` → [(a, ("=", x)), (b, ("!~", y))]. Values are plain here (no escapes in
/// polypush's labels or our queries beyond `\"`, handled).
fn parse_matchers(s: &str) -> Vec<(String, (String, String))> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_string();
        rest = rest[name_end..].trim_start();
        let op_len = ["=~", "!~", "!=", "="]
            .iter()
            .find(|op| rest.starts_with(**op))
            .map(|op| op.len())
            .unwrap_or_else(|| panic!("no matcher operator in {s:?}"));
        let op = rest[..op_len].to_string();
        rest = rest[op_len..].trim_start();
        let quote = rest.chars().next().expect("quoted value");
        let mut value = String::new();
        let mut chars = rest[1..].char_indices();
        let mut consumed = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                c if c == quote => {
                    consumed = 1 + i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((name, (op, value)));
        rest = rest[consumed..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    out
}

/// One selector in a query: a metric name and its `{…}` matchers.
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<(String, (String, String))>,
}

/// The metric selectors of a PromQL expression (Grafana's `$variables` allowed): skips
/// strings, range and subquery brackets, functions and aggregations (an identifier before
/// `(`), keywords, the label lists of by/without/on/ignoring/group_left/group_right, and
/// durations after `offset`.
fn selectors(expr: &str) -> Vec<Selector> {
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let b: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut skip_label_list = false;
    let mut after_offset = false;
    while i < b.len() {
        let c = b[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < b.len() && b[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // A selector without a name ({__name__=…}): not used here.
            panic!("a selector without a metric name in {expr:?}");
        } else if c == '$' {
            // A Grafana variable: $name or ${name}.
            i += 1;
            if i < b.len() && b[i] == '{' {
                while i < b.len() && b[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == '.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()) {
            // A number (1e3, 0x1f, 2.5) or a duration (5m).
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let mut j = i;
            while j < b.len() && b[j].is_whitespace() {
                j += 1;
            }
            let next = b.get(j).copied();
            let lower = word.to_ascii_lowercase();
            // An aggregation with its clause first: `sum by (x) (…)`.
            let rest: String = b[j..]
                .iter()
                .take(8)
                .collect::<String>()
                .to_ascii_lowercase();
            let clause_follows = ["by", "without"].iter().any(|k| {
                rest.strip_prefix(k)
                    .is_some_and(|r| r.starts_with(|c: char| c == '(' || c.is_whitespace()))
            });
            if after_offset {
                after_offset = false;
            } else if LABEL_LISTS.contains(&lower.as_str()) {
                skip_label_list = true;
            } else if lower == "offset" {
                after_offset = true;
            } else if KEYWORDS.contains(&lower.as_str()) || next == Some('(') || clause_follows {
                // A keyword, or a function / aggregation call.
            } else {
                let mut matchers = Vec::new();
                if next == Some('{') {
                    let close = (j..b.len())
                        .find(|&k| b[k] == '}')
                        .unwrap_or_else(|| panic!("unclosed {{ in {expr:?}"));
                    let inner: String = b[j + 1..close].iter().collect();
                    matchers = parse_matchers(&inner);
                    i = close + 1;
                }
                out.push(Selector {
                    metric: word,
                    matchers,
                });
            }
        } else if c == '(' && skip_label_list {
            skip_label_list = false;
            while i < b.len() && b[i] != ')' {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// The `expr:` values of a Prometheus rule file (single-line or a YAML block scalar).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let rest = rest.trim();
        let mut expr = String::new();
        if rest.starts_with('>') || rest.starts_with('|') {
            for next in &lines[n + 1..] {
                let t = next.trim_start();
                if !t.is_empty() && next.len() - t.len() <= indent {
                    break;
                }
                expr.push_str(t);
                expr.push(' ');
            }
        } else {
            expr = unquote(rest);
        }
        out.push(expr.trim().to_string());
    }
    out
}

/// The `series:` selectors of a promtool test file's input_series.
fn test_series(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.trim_start().strip_prefix("- series:"))
        .map(|s| unquote(s.trim()))
        .collect()
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['\'', '"'] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner.to_string();
        }
    }
    s.to_string()
}

/// Every `expr` in a Grafana dashboard (panel targets), and the metric of every
/// `label_values(metric…, label)` variable query.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("definition", serde_json::Value::String(s)) => {
                        if let Some(inner) = s.strip_prefix("label_values(") {
                            let (metric, _label) = inner
                                .rsplit_once(',')
                                .unwrap_or_else(|| panic!("label_values without a label: {s}"));
                            out.push(metric.to_string());
                        }
                    }
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// Checks one query's selectors against what polypush serves; returns the problems.
fn check_query(
    origin: &str,
    expr: &str,
    served: &Served,
    used: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let sels = selectors(expr);
    if sels.is_empty() {
        problems.push(format!("{origin}: no metric found in {expr:?}"));
    }
    for s in sels {
        used.insert(s.metric.clone());
        if BUILT_IN.contains(&s.metric.as_str()) {
            continue;
        }
        let Some(labels) = served.get(&s.metric) else {
            problems.push(format!(
                "{origin}: {} is not in polypush's /metrics (in {expr:?})",
                s.metric
            ));
            continue;
        };
        for (label, (op, value)) in &s.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            match labels.get(label) {
                None => problems.push(format!(
                    "{origin}: {} has no label {label} (in {expr:?})",
                    s.metric
                )),
                Some(values) if op == "=" && !values.contains(value) => problems.push(format!(
                    "{origin}: {}{{{label}=\"{value}\"}} never exists: {label} is one of {values:?}",
                    s.metric
                )),
                Some(_) => {}
            }
        }
    }
    problems
}

#[test]
fn the_tokenizer_finds_metrics_and_nothing_else() {
    let names = |e: &str| -> Vec<String> { selectors(e).into_iter().map(|s| s.metric).collect() };
    assert_eq!(
        names(
            r#"sum by (instance, reason) (rate(polypush_frames_dropped_total{job="polypush",instance=~"$instance"}[$__rate_interval])) > 0"#
        ),
        ["polypush_frames_dropped_total"]
    );
    assert_eq!(
        names("(a_b / c:d < 0.2) and on (instance) (up == 0) or vector(1) offset 5m"),
        ["a_b", "c:d", "up"]
    );
    assert_eq!(names(r#"x{l="a b,c"} * 1e3 + y[5m:1m]"#), ["x", "y"]);
    let s = &selectors(r#"polypush_state{state="live", instance=~"$instance"}"#)[0];
    assert_eq!(
        s.matchers,
        [
            ("state".to_string(), ("=".to_string(), "live".to_string())),
            (
                "instance".to_string(),
                ("=~".to_string(), "$instance".to_string())
            ),
        ]
    );
    assert_eq!(
        rule_exprs("      - alert: A\n        expr: >-\n          a\n            / b\n        for: 1m\n      - alert: B\n        expr: 'up == 0'\n"),
        ["a / b", "up == 0"]
    );
}

#[test]
fn every_metric_in_rules_and_dashboard_is_served() {
    let text = metrics_text();
    let served = served(&text);
    // The snapshot must really be complete: every family has samples.
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(
                served.contains_key(name),
                "{name} has no sample: fill the snapshot in metrics_text() so every series exists\n{text}"
            );
        }
    }

    let deploy = repo().join("deploy");
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    let mut queries = 0;

    let rules_dir = deploy.join("prometheus/rules");
    let mut rule_files: Vec<PathBuf> = std::fs::read_dir(&rules_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", rules_dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    rule_files.sort();
    assert!(
        !rule_files.is_empty(),
        "no rule files in {}",
        rules_dir.display()
    );
    for path in &rule_files {
        let yaml = read(path);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for expr in rule_exprs(&yaml) {
            queries += 1;
            problems.extend(check_query(&name, &expr, &served, &mut used));
        }
        for series in test_series(&yaml) {
            queries += 1;
            problems.extend(check_query(&name, &series, &served, &mut used));
        }
    }

    let dash_path = deploy.join("grafana/polypush-fleet.json");
    let dash: serde_json::Value = serde_json::from_str(&read(&dash_path))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", dash_path.display()));
    let mut exprs = Vec::new();
    dashboard_exprs(&dash, &mut exprs);
    assert!(
        exprs.len() > 10,
        "the dashboard has only {} queries",
        exprs.len()
    );
    for expr in &exprs {
        queries += 1;
        problems.extend(check_query("polypush-fleet.json", expr, &served, &mut used));
    }
    // The dashboard's variables: a Prometheus data source and a multi-select of boxes.
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(vars
        .iter()
        .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"));
    assert!(vars
        .iter()
        .any(|v| v["name"] == "instance" && v["multi"] == true));

    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let unused: Vec<&String> = served.keys().filter(|k| !used.contains(*k)).collect();
    eprintln!(
        "{queries} queries checked; {} metrics used: {:?}; served but unused: {unused:?}",
        used.len(),
        used
    );
    // The alerts the issue asks for are all there.
    let rules = read(&rules_dir.join("polypush.rules.yml"));
    for alert in [
        "PolypushDown",
        "PolypushNotStreamingInWindow",
        "PolypushReconnectStorm",
        "PolypushDropping",
        "PolypushQueueDelayHigh",
        "PolypushBitrateAtFloor",
        "PolypushCredentialsRejected",
        "PolypushMicrophoneSilent",
        "PolypushPictureBlack",
        "PolypushPictureFrozen",
        "PolypushLowFrameRate",
        "PolypushAudioClipping",
        "PolypushLessonIncomplete",
    ] {
        assert!(
            rules.contains(&format!("- alert: {alert}\n")),
            "{alert} missing"
        );
    }
}

/// `promtool` from `scripts/promtool.sh`, or `None` with a message.
fn promtool() -> Option<String> {
    let script = repo().join("scripts/promtool.sh");
    let out = Command::new(&script)
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    if !out.status.success() {
        eprintln!(
            "SKIPPED promtool checks of deploy/prometheus: scripts/promtool.sh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn promtool_ok(promtool: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {promtool}: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?}: {:?}\n{said}",
        out.status
    );
    said
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn promtool_checks_config_and_rules_and_runs_the_rule_tests() {
    let Some(promtool) = promtool() else { return };
    let rules = repo().join("deploy/prometheus/rules");
    let said = promtool_ok(&promtool, &["check", "rules", "polypush.rules.yml"], &rules);
    assert!(said.contains("SUCCESS: 13 rules found"), "{said}");
    let said = promtool_ok(
        &promtool,
        &["test", "rules", "polypush.rules.test.yml"],
        &rules,
    );
    assert!(said.contains("SUCCESS"), "{said}");
    eprintln!("{}", said.trim());

    // prometheus.yml as installed: rules/ and targets/ beside it, and the token file
    // (credentials_file, relative to the config) that promtool checks exists.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("deploy/prometheus"), dir.path());
    std::fs::write(
        dir.path().join("polypush-status-token"),
        "not-a-real-token\n",
    )
    .unwrap();
    let said = promtool_ok(
        &promtool,
        &["check", "config", "prometheus.yml"],
        dir.path(),
    );
    assert!(
        said.contains("is valid prometheus config file syntax")
            && said.contains("SUCCESS: 13 rules found"),
        "{said}"
    );
}
