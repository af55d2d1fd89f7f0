#!/usr/bin/env python3
"""Measures the A/V offset of a recording of the sync test pattern (bench/av_sync.sh).

    av_sync.py RECORDING.flv [LABEL]

Video: the luma of every frame (ffmpeg signalstats); a flash starts at the first bright frame
after a dark one. Audio: decoded to mono f32 at 48 kHz from the first audio packet's time (the
AAC timeline in the recording is continuous: silence inserted or frames skipped change what is
in it, not its timestamps); a beep starts at the first sample above 0.05 after at least 0.5 s
of silence. Every flash is paired with the beep nearest to it (within 0.5 s); the offset is
beep − flash (positive: audio late). The AAC encoder's 1024-sample priming delay (21.3 ms at
48 kHz, which FLV cannot signal, so every player hears it) is subtracted and reported apart.

A correction (silence inserted, a frame skipped) shows as a jump of the offset between two
consecutive seconds of more than 8 ms (a frame is 21.3 ms); such jumps are counted.

A flash whose first frame the encoder dropped (the bright frame follows a gap in the video
timestamps) is left out and counted.

Prints one line per minute and a summary line starting with "SUMMARY".
"""
import json
import re
import subprocess
import sys

RATE = 48000
PRIMING_S = 1024 / RATE


def video_onsets(path):
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-copyts", "-i", path, "-map", "0:v:0", "-vf",
         "signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-", "-f", "null", "-"],
        check=True, capture_output=True, text=True).stdout
    frames, t = [], None
    for line in out.splitlines():
        m = re.search(r"pts_time:([-0-9.]+)", line)
        if m:
            t = float(m.group(1))
            continue
        m = re.match(r"lavfi\.signalstats\.YAVG=([0-9.]+)", line)
        if m and t is not None:
            frames.append((t, float(m.group(1))))
    gaps = sorted(b[0] - a[0] for a, b in zip(frames, frames[1:]))
    step = gaps[len(gaps) // 2] if gaps else 0.04
    # A flash whose first frame was dropped (the encoder fell behind) would start a frame
    # late: a bright frame after a gap is not an onset to measure.
    onsets, unsure = [], 0
    for (t0, y0), (t1, y1) in zip(frames, frames[1:]):
        if y1 > 128 and y0 <= 128:
            if t1 - t0 > 1.5 * step:
                unsure += 1
            else:
                onsets.append(t1)
    if frames and frames[0][1] > 128:
        onsets.insert(0, frames[0][0])
    return onsets, unsure


def audio_onsets(path):
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=pts_time",
         "-read_intervals", "%+#1", "-of", "json", path],
        check=True, capture_output=True, text=True).stdout
    t0 = float(json.loads(probe)["packets"][0]["pts_time"])
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", path, "-map", "0:a:0", "-ac", "1", "-ar", str(RATE),
         "-f", "f32le", "-"], check=True, capture_output=True).stdout
    import array
    samples = array.array("f")
    samples.frombytes(raw[: len(raw) // 4 * 4])
    onsets, quiet = [], RATE  # start as if after silence
    for i, s in enumerate(samples):
        if s > 0.05 or s < -0.05:
            if quiet >= RATE // 2:
                onsets.append(t0 + i / RATE)
            quiet = 0
        else:
            quiet += 1
    return onsets


def main():
    path = sys.argv[1]
    label = sys.argv[2] if len(sys.argv) > 2 else path
    v, unsure = video_onsets(path)
    a = audio_onsets(path)
    pairs, j = [], 0
    for tv in v:
        while j + 1 < len(a) and abs(a[j + 1] - tv) <= abs(a[j] - tv):
            j += 1
        if a and abs(a[j] - tv) < 0.5:
            pairs.append((tv, (a[j] - tv - PRIMING_S) * 1000))
    if not pairs:
        print(f"SUMMARY {label} no flash/beep pairs found (video {len(v)}, audio {len(a)})")
        sys.exit(1)
    start = pairs[0][0]
    jumps_after_first_minute = 0
    for (t1, o1), (t2, o2) in zip(pairs, pairs[1:]):
        if t2 - t1 < 2.5 and abs(o2 - o1) > 8 and t2 - start > 60:
            jumps_after_first_minute += 1
    minutes = {}
    for t, o in pairs:
        minutes.setdefault(int((t - start) // 60), []).append(o)
    for m in sorted(minutes):
        os_ = minutes[m]
        print(f"{label} minute {m + 1}: mean {sum(os_) / len(os_):+.1f} ms, "
              f"min {min(os_):+.1f}, max {max(os_):+.1f} ({len(os_)} flashes)")
    after = [o for t, o in pairs if t - start >= 60]
    worst_all = max(abs(o) for _, o in pairs)
    worst_after = max((abs(o) for o in after), default=float("nan"))
    per_min = " ".join(f"{sum(minutes[m]) / len(minutes[m]):+.1f}" for m in sorted(minutes))
    print(f"SUMMARY {label} | {per_min} | {worst_all:.1f} | {worst_after:.1f} | "
          f"{jumps_after_first_minute} | {len(pairs)} ({unsure} after a dropped frame left out)")


if __name__ == "__main__":
    main()
