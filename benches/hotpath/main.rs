//! Hot-path benchmark: pre-encoded H.264/AAC access units through FLV packetizer → ring → RTMP
//! session → loopback TCP, on one sender thread.
//!
//! Run with `cargo bench --bench hotpath` (a plain `main`, `harness = false`). It prints
//! Markdown: machine info, one row per stage and per end-to-end pipeline, and a per-step
//! allocation attribution. `bench/hotpath.md` holds a recorded run and explains the rows.
//!
//! - Media: 10 s of 1280x720@30 libx264 (2500 kbit/s, veryfast, zerolatency, no B-frames, GOP
//!   60, AUDs inserted) and AAC-LC 128 kbit/s 48 kHz stereo, made once with the `ffmpeg` CLI
//!   into `$CARGO_TARGET_TMPDIR/hotpath-media-v1/` and reused. Access units are split at AUDs
//!   and ADTS headers and kept in memory as `Bytes`; video and audio are interleaved by DTS.
//! - The measured loop runs faster than real time over the units again and again with
//!   increasing timestamps. The sender is one thread: a current-thread tokio runtime around
//!   `rtmp::Publisher` (the production sender's type). The peer is a second thread that runs
//!   `rml_rtmp`'s handshake and `ServerSession` to accept `connect`/`publish`, then only drains
//!   the socket, answering with an RTMP Acknowledgement every 2.5 MB as nginx-rtmp does.
//! - A counting `#[global_allocator]` counts allocations (`alloc`, `alloc_zeroed`, `realloc`)
//!   and their bytes, only on threads that switched counting on (the sender, during the
//!   measured window), so the peer thread's work is not counted.
//! - CPU time is `getrusage`: the sender thread (`RUSAGE_THREAD`) and the whole process
//!   (`RUSAGE_SELF`, which includes the peer thread).
//!
//! Environment: `HOTPATH_SECS` (default 5) is the measured time of each end-to-end pipeline,
//! `HOTPATH_STAGE_SECS` (default 1) that of each single-stage row; `HOTPATH_PIN=1` pins the
//! sender and the peer thread to two CPUs.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use polypush::media::MediaPacket;

use measure::{cpu_pair, pin_to, secs_from_env, PEER_CPU, REPEATS};
use media::load_media;
use reference::{reference_own_chunker, reference_pipeline_own_chunker, SlabPacketizer};
use report::{attribution_table, machine_info, row};
use stages::{
    bodies, kind_of, pipeline, stage_handover_copy, stage_handover_mux, stage_packetize,
    stage_packetize_held, stage_pipeline_no_rtmp, stage_ring, stage_rml_serializer, stage_session,
    stage_socket, Packetizers, SendMode,
};

mod measure;
mod media;
mod peer;
mod reference;
mod report;
mod stages;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let secs = secs_from_env("HOTPATH_SECS", 5.0);
    let stage_secs = secs_from_env("HOTPATH_STAGE_SECS", 1.0);
    let mut machine = machine_info();
    let media = load_media();
    // After ffmpeg, which would inherit the affinity.
    match cpu_pair() {
        Some((sender, peer)) => {
            pin_to(sender);
            PEER_CPU.store(peer as u64, Relaxed);
            machine.push(format!(
                "- sender thread pinned to CPU {sender}, peer thread to CPU {peer}"
            ));
        }
        None => machine.push("- threads not pinned (`HOTPATH_PIN=1` pins them)".to_string()),
    }
    let bodies = bodies(&media);
    let body_bytes: usize = bodies.iter().map(Bytes::len).sum();
    let mut slab = SlabPacketizer::default();
    for (unit, body) in media.units.iter().zip(&bodies) {
        assert_eq!(
            &slab.packetize(unit),
            body,
            "the reference packetizer's bytes differ"
        );
    }

    eprintln!("running stages ({stage_secs:?} each) and pipelines ({secs:?} each)…");
    let handover_copy = stage_handover_copy(&media, stage_secs);
    let handover_mux = stage_handover_mux(&media, stage_secs);
    let packetize = stage_packetize(&media, stage_secs);
    let mut p = Packetizers::default();
    let packetize_held = stage_packetize_held(&media, stage_secs, |u, offset| {
        MediaPacket::new(kind_of(u), offset + u.dts_ms, p.packetize(u, 0, 0).body)
    });
    let mut slab = SlabPacketizer::default();
    let slab_held = stage_packetize_held(&media, stage_secs, |u, offset| {
        MediaPacket::new(kind_of(u), offset + u.dts_ms, slab.packetize(u))
    });
    let ring = stage_ring(&media, &bodies, stage_secs);
    let rml = stage_rml_serializer(&media, &bodies, stage_secs);
    let own_chunker = reference_own_chunker(&media, &bodies, stage_secs);
    let session = stage_session(&media, &bodies, stage_secs);
    let (socket, socket_rx) = stage_socket(&media, &bodies, stage_secs);
    let (no_rtmp, no_rtmp_rx) = stage_pipeline_no_rtmp(&media, stage_secs);
    let (queue, queue_rx, queue_tx, attribution) = pipeline(&media, secs, SendMode::Queue);
    let (send, send_rx, send_tx, _) = pipeline(&media, secs, SendMode::Send);
    let (own, own_rx) = reference_pipeline_own_chunker(&media, stage_secs);
    // The peer also gets `deleteStream` from `close`, after the last `written_bytes`.
    assert!(
        queue_rx >= queue_tx && send_rx >= send_tx,
        "the peer lost bytes"
    );
    assert!(socket_rx >= socket.wire && no_rtmp_rx >= no_rtmp.payload && own_rx >= own.wire);

    let mut out = Vec::new();
    out.push("## Machine".to_string());
    out.extend(machine);
    out.push(String::new());
    out.push("## Media".to_string());
    out.push(format!(
        "- {} video access units + {} AAC frames per pass ({:.1} MB encoded, {:.1} MB of FLV bodies, {} ms of media); average {:.0} bytes per packet",
        media.video_frames,
        media.audio_frames,
        media.bytes as f64 / 1e6,
        body_bytes as f64 / 1e6,
        media.period_ms,
        body_bytes as f64 / media.units.len() as f64,
    ));
    out.push(String::new());
    out.push("## Throughput and allocations (steady state, sender thread)".to_string());
    out.push(String::new());
    out.push("| stage | packets/s | payload Gbit/s (range) | wire Gbit/s | allocs/packet | allocated bytes/packet | sender CPU s/GB (of which sys) | payload Gbit/s per sender core | process CPU s/GB |".to_string());
    out.push("|---|---|---|---|---|---|---|---|---|".to_string());
    out.push(row(
        "encoder hand-over before: payload copied into `Bytes`, then packetized",
        &handover_copy,
    ));
    out.push(row(
        "**encoder hand-over now: muxed from the borrowed payload** (production)",
        &handover_mux,
    ));
    out.push(row("packetize (FLV, previous body dropped)", &packetize));
    out.push(row(
        "packetize, previous body of the track still held",
        &packetize_held,
    ));
    out.push(row(
        "reference: packetize reserving 64 KiB (video) / 16 KiB (audio) slabs (proposal), previous body still held",
        &slab_held,
    ));
    out.push(row("ring push + try_pop", &ring));
    out.push(row("rml_rtmp `ChunkSerializer::serialize` alone", &rml));
    out.push(row(
        "reference: own media chunker into a reused buffer alone (proposal)",
        &own_chunker,
    ));
    out.push(row(
        "`Session::send` + `poll_transmit` (no socket)",
        &session,
    ));
    out.push(row(
        "socket write only (pre-serialized chunks, tokio)",
        &socket,
    ));
    out.push(row(
        "pipeline without RTMP: mux → ring → body to socket",
        &no_rtmp,
    ));
    out.push(row(
        "**pipeline: mux → ring → `Publisher::queue` → socket** (production sender)",
        &queue,
    ));
    out.push(row(
        "pipeline with `Publisher::send` instead of `queue`",
        &send,
    ));
    out.push(row(
        "reference: pipeline with an own media chunker into a reused buffer (proposal)",
        &own,
    ));
    out.push(String::new());
    out.push(format!(
        "Each row is the median of {REPEATS} windows by payload throughput (range: slowest–fastest \
         window). payload = FLV tag bodies; wire = bytes produced for / written to the socket \
         (RTMP chunks). CPU (user + sys, getrusage) per GB of payload: sender = the measuring \
         thread, process = also the peer thread. Gbit/s per sender core = 8 / sender CPU s/GB: \
         the rate one fully busy core would sustain, which load on a shared machine disturbs \
         less than wall-clock throughput."
    ));
    out.push(String::new());
    out.push(
        "## Where the allocations are (one extra pass of the production pipeline, per step)"
            .to_string(),
    );
    out.push(String::new());
    if let Some(a) = &attribution {
        out.extend(attribution_table(a));
    }
    out.push(String::new());
    out.push(format!(
        "Copies of a frame's bytes per packet on the production path: 2 (the muxer's one-pass \
         rewrite from FFmpeg's buffer, rml_rtmp's chunk serializer); before this change 3 (a \
         copy into `Bytes` came first). The removed copy: {:.0} vs {:.0} ns per packet for the \
         hand-over rows above.",
        1e9 / handover_copy.pps(),
        1e9 / handover_mux.pps()
    ));
    out.push(String::new());
    let gbit = queue.gbit();
    out.push(format!(
        "Goal ≥ 1 Gbit/s payload through the production pipeline: {} ({gbit:.2} Gbit/s).",
        if gbit >= 1.0 { "met" } else { "NOT met" }
    ));
    println!("{}", out.join("\n"));
}
