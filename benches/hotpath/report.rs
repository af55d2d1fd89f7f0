//! The Markdown report's pieces: machine information, one table row per measurement, and the
//! per-step allocation table.

use crate::measure::{AllocSnap, Measure};
use crate::stages::Attribution;

// ---------------------------------------------------------------------------------------------
// Report

pub(super) fn machine_info() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".into(), |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".into(), |s| s.trim().to_string());
    let load = std::fs::read_to_string("/proc/loadavg").map_or("unknown".into(), |s| {
        s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    });
    vec![
        format!("- CPU: {cpu}, {cores} logical CPUs available"),
        format!("- Linux {kernel}, load average before the run: {load}"),
        format!(
            "- polypush {}, `cargo bench` (the `bench` profile inherits `release`: thin LTO, \
             codegen-units 4); dependency versions from Cargo.lock",
            env!("CARGO_PKG_VERSION")
        ),
    ]
}

pub(super) fn row(name: &str, m: &Measure) -> String {
    let s = m.wall.as_secs_f64();
    let gb = m.payload as f64 / 1e9;
    let per_pkt = |x: u64| x as f64 / m.packets as f64;
    let wire = if m.wire > 0 {
        format!("{:.2}", m.wire as f64 * 8.0 / s / 1e9)
    } else {
        "–".into()
    };
    let cpu = m.cpu_thread.as_secs_f64() / gb;
    format!(
        "| {name} | {:.0} | {:.2} ({:.2}–{:.2}) | {wire} | {:.2} | {:.0} | {cpu:.3} ({:.3}) | {:.1} | {:.3} |",
        m.packets as f64 / s,
        m.gbit(),
        m.gbit_range.0,
        m.gbit_range.1,
        per_pkt(m.alloc.allocs),
        per_pkt(m.alloc.bytes),
        m.cpu_thread_sys.as_secs_f64() / gb,
        8.0 / cpu,
        m.cpu_process.as_secs_f64() / gb,
    )
}

pub(super) fn attribution_table(a: &Attribution) -> Vec<String> {
    let cell = |v: &[AllocSnap; 2], k: usize| {
        let n = a.packets[k].max(1) as f64;
        format!(
            "{:.2} / {:.0}",
            v[k].allocs as f64 / n,
            v[k].bytes as f64 / n
        )
    };
    let mut out = vec![
        "| step (one pass, sender thread) | video: allocs / bytes per packet | audio: allocs / bytes per packet |".to_string(),
        "|---|---|---|".to_string(),
    ];
    let rows: [(&str, &[AllocSnap; 2]); 7] = [
        (
            "`VideoPacketizer`/`AudioPacketizer::packetize` (previous body dropped)",
            &a.packetize,
        ),
        ("`Ring::push`", &a.push),
        ("`Ring::try_pop`", &a.pop),
        ("`Publisher::service` readiness poll (acks in)", &a.service),
        (
            "`Publisher::queue` (Session::send + rml_rtmp + write)",
            &a.publish,
        ),
        (
            "  of which rml_rtmp `ChunkSerializer::serialize` (same packet, separately)",
            &a.rml,
        ),
        ("drop of the popped packet", &a.drop),
    ];
    for (name, v) in rows {
        out.push(format!("| {name} | {} | {} |", cell(v, 0), cell(v, 1)));
    }
    let ours = |k: usize| {
        let n = a.packets[k].max(1) as f64;
        let allocs = a.packetize[k].allocs
            + a.push[k].allocs
            + a.pop[k].allocs
            + a.service[k].allocs
            + a.publish[k].allocs
            + a.drop[k].allocs;
        let bytes = a.packetize[k].bytes
            + a.push[k].bytes
            + a.pop[k].bytes
            + a.service[k].bytes
            + a.publish[k].bytes
            + a.drop[k].bytes;
        format!(
            "{:.2} / {:.0}",
            (allocs as f64 - a.rml[k].allocs as f64) / n,
            (bytes as f64 - a.rml[k].bytes as f64) / n
        )
    };
    out.push(format!(
        "| **ours** (all steps minus rml_rtmp's serializer) | {} | {} |",
        ours(0),
        ours(1)
    ));
    out
}
