//! The real ALSA path without a sound card: `[audio] source = "alsa"` through FFmpeg's alsa
//! input and libasound, to a real nginx-rtmp, with the tone checked in its recording.
//!
//! The capture device is alsa-lib's `file` PCM plugin over a `null` slave, defined in a
//! config file named by `ALSA_CONFIG_PATH` (which replaces the system's alsa.conf, so only
//! this one PCM exists and nothing depends on the machine's sound setup or /dev/snd):
//!
//! ```text
//! pcm.polypush_tone {
//!     type file
//!     slave.pcm { type null }   # inline: the name "null" is only defined by alsa.conf
//!     file "/dev/null"          # where the plugin would copy what the slave captured
//!     infile "/tmp/…/tone.fifo" # what a capture reads instead: raw S16_LE 48 kHz stereo
//!     format raw
//! }
//! ```
//!
//! Neither plugin keeps time (libasound 1.2.8): the null slave always reports a full buffer,
//! so a capture from a plain `infile` runs as fast as it is read (here 35 times real time),
//! and past the end of the file it delivers garbage. So `infile` is a FIFO, and the ffmpeg
//! CLI writes the tone into it with `-re`: the plugin's blocking `read` of the FIFO paces the
//! device at 48000 frames a second, like a microphone. Both plugins are built into
//! libasound2 (no libasound2-plugins needed). The writer is stopped by its PID.
//!
//! FFmpeg 5.1's alsa input sets the period to the device's minimum
//! (`snd_pcm_hw_params_get_period_size_min`), which for the null slave is 1 frame, so every
//! read is one frame: 48000 packets a second (neither the file nor the null plugin takes a
//! period setting, and FFmpeg's alsa input has no option for it). The capture thread keeps
//! up with that (about 30 % of a core in a debug build, as much as the ffmpeg CLI spends on
//! the same device) and gathers the one-sample frames into 20 ms frames before they reach the
//! encoder's queue (`src/capture/worker/batch.rs`); without that the queue dropped most of
//! them and the tone had gaps. This device has no clock of its own, so its timestamps are
//! the time each sample was read, and a capture thread held up for more than 40 ms on a busy
//! machine makes the encoder insert that much silence, then skip 20 ms frames of the backlog
//! it reads in a burst. So each second must be the tone (level within 6 dB, frequency within
//! 50 %) and the whole run must have its level (within 2 dB) and frequency (within 3 %).
//! The error-routing test below needs no tone.

mod common;

use common::nginx::{decode_errors, Nginx};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The tone: 1 kHz at amplitude 0.5 (peak -6.02 dBFS, RMS -9.03 dBFS) on both channels.
const TONE_HZ: f64 = 1000.0;
const TONE_RMS_DB: f64 = -9.03;
const PCM: &str = "polypush_tone";
/// The device's (and the encoder's) sample rate: FFmpeg reads one packet per sample.
const DEVICE_RATE: u32 = 48000;

/// The ffmpeg CLI writing the tone into a FIFO in real time; killed by its PID on drop.
struct ToneWriter(std::process::Child);

impl Drop for ToneWriter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Makes a FIFO and the ALSA config defining [`PCM`] over it (the config's path), and starts
/// writing `seconds` of the tone into the FIFO as raw S16_LE 48 kHz stereo, at real time (the
/// writer blocks until the device opens the FIFO).
fn tone_device(dir: &Path, seconds: u32) -> (PathBuf, ToneWriter) {
    let fifo = dir.join("tone.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let graph = format!(
        "aevalsrc=0.5*sin(2*PI*{TONE_HZ}*t)|0.5*sin(2*PI*{TONE_HZ}*t):s={DEVICE_RATE}:c=stereo:d={seconds}"
    );
    let writer = Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "quiet", "-re", "-f", "lavfi", "-i", &graph,
        ])
        .args(["-f", "s16le", "-c:a", "pcm_s16le", "-y"])
        .arg(&fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ffmpeg");
    let conf = dir.join("asound.conf");
    std::fs::write(
        &conf,
        format!(
            "pcm.{PCM} {{\n    type file\n    slave.pcm {{ type null }}\n    file \"/dev/null\"\n    infile \"{}\"\n    format raw\n}}\n",
            fifo.display()
        ),
    )
    .unwrap();
    (conf, ToneWriter(writer))
}

/// A test-pattern broadcast config whose audio is the ALSA device `device`.
fn alsa_config(dir: &Path, device: &str) -> PathBuf {
    let cfg = write_run_config(dir, None, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("width = 640", "width = 320")
        .replace("height = 360", "height = 240")
        .replace(
            "[audio]\nsource = \"test\"\n",
            &format!("[audio]\nsource = \"alsa\"\ndevice = \"{device}\"\nsample_rate = {DEVICE_RATE}\nchannels = 2\n"),
        );
    assert!(text.contains("source = \"alsa\""), "{text}");
    std::fs::write(&cfg, &text).unwrap();
    cfg
}

/// The recording's audio decoded to f32 samples at 48 kHz, one vector per channel (left,
/// right). Not downmixed: FFmpeg's stereo-to-mono sums the channels at -3 dB each, so two
/// identical channels would come out 3 dB louder than either.
fn decoded_audio(path: &Path) -> [Vec<f32>; 2] {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-vn", "-ac", "2", "-ar", "48000", "-f", "f32le", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let channel = |c: usize| {
        out.stdout
            .chunks_exact(8)
            .map(|b| f32::from_le_bytes([b[4 * c], b[4 * c + 1], b[4 * c + 2], b[4 * c + 3]]))
            .collect()
    };
    [channel(0), channel(1)]
}

/// RMS level, dBFS.
fn rms_db(x: &[f32]) -> f64 {
    let ms = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64;
    10.0 * ms.log10()
}

/// Rising crossings per second (with hysteresis, so codec noise around zero never counts):
/// the frequency of a tone; near 0 for silence, and erratic for noise.
fn frequency_hz(x: &[f32], rate: f64) -> f64 {
    const T: f32 = 0.05;
    let mut low = false;
    let mut rising = 0u32;
    for &v in x {
        if v < -T {
            low = true;
        } else if v > T && low {
            low = false;
            rising += 1;
        }
    }
    f64::from(rising) * rate / x.len() as f64
}

/// 12 s of `[audio] source = "alsa"` from the file-plugin device with a test-pattern picture:
/// the recording at nginx has the tone, at its level and frequency, in every second.
#[test]
fn alsa_capture_carries_the_tone_to_the_ingest() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    // Longer than the run: the writer is stopped when the test ends.
    let (conf, _writer) = tone_device(dir.path(), 60);
    let cfg = alsa_config(dir.path(), PCM);
    let run_s = 12;
    let r = polypush_env(
        &cfg,
        &[
            "--json",
            "run",
            "--url",
            &nginx.url("alsa"),
            "--duration",
            &run_s.to_string(),
        ],
        &[("ALSA_CONFIG_PATH", conf.to_str().unwrap())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !r.stderr.contains("ALSA lib"),
        "libasound printed on its own:\n{}",
        r.stderr
    );
    // The audio encoder kept up: no captured audio was dropped at its queue.
    let dropped: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("not keeping up") && l.contains("track=audio"))
        .collect();
    assert!(
        dropped.is_empty(),
        "captured audio was dropped: {dropped:#?}"
    );
    // FFmpeg reads this device one sample per packet (its period is 1 frame); the encoder
    // got them gathered into 20 ms frames (960 samples): about 50 a second, paced like a
    // microphone, not 48000 (`audio_frames_encoded` counts the frames the encoder took in).
    // The upper bound leaves room for batches cut short by their 40 ms age limit when the
    // capture thread was held up.
    let summary = r.json();
    let frames = summary["audio_frames_encoded"].as_u64().unwrap() as f64;
    let per_s = 50.0;
    assert!(
        frames > per_s * (run_s as f64 - 2.0) && frames < 2.0 * per_s * (run_s as f64 + 1.0),
        "{frames} audio frames in {run_s} s: {summary}"
    );

    // What the encoder did to stay on the capture clock, for a failure's message.
    let timeline: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| {
            [
                "skipping a frame",
                "inserting silence",
                "re-anchored",
                "not keeping up",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .collect();
    let rec = nginx.recording("alsa");
    let errors = decode_errors(&rec);
    assert!(errors.is_empty(), "{errors}");
    let channels = decoded_audio(&rec);
    let rate = 48000.0;
    for (name, samples) in ["left", "right"].into_iter().zip(&channels) {
        assert!(
            samples.len() as f64 > rate * (run_s as f64 - 2.0),
            "{} s of audio in the recording",
            samples.len() as f64 / rate
        );
        // Every whole second after the first (encoder priming, the start of the file) is the
        // tone, not silence or noise; the whole of them has the tone's level and frequency:
        // dropped frames (what happened before the encoder got 20 ms frames) leave gaps in
        // every second and fail both. This device has no clock (see the module docs): a
        // capture thread held up for more than 40 ms on a busy machine makes the encoder
        // insert that much silence, which can take one second a third short, but hardly
        // moves the whole run.
        let seconds: Vec<&[f32]> = samples.chunks_exact(48000).collect();
        assert!(seconds.len() >= 9, "{} whole seconds", seconds.len());
        for (i, s) in seconds.iter().enumerate().skip(1) {
            let level = rms_db(s);
            let hz = frequency_hz(s, rate);
            assert!(
                (level - TONE_RMS_DB).abs() < 6.0 && (hz - TONE_HZ).abs() < TONE_HZ * 0.5,
                "{name}, second {i}: RMS {level:.2} dBFS, {hz:.1} Hz; the tone is {TONE_RMS_DB} dBFS, {TONE_HZ} Hz: {timeline:#?}"
            );
        }
        let whole = &samples[48000..seconds.len() * 48000];
        let level = rms_db(whole);
        let hz = frequency_hz(whole, rate);
        assert!(
            (level - TONE_RMS_DB).abs() < 2.0 && (hz - TONE_HZ).abs() < TONE_HZ * 0.03,
            "{name}: RMS {level:.2} dBFS, {hz:.1} Hz; the tone is {TONE_RMS_DB} dBFS, {TONE_HZ} Hz: {timeline:#?}"
        );
    }
}

/// A device name libasound does not know: the run fails with the error naming
/// `[audio] device`, and libasound's own message ("Unknown PCM …") arrives as a WARN log line
/// with its source location, never as libasound's raw `ALSA lib …` line.
#[test]
fn libasound_errors_go_through_the_log_not_raw_to_stderr() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (conf, _writer) = tone_device(dir.path(), 1);
    let cfg = alsa_config(dir.path(), "polypush_no_such_pcm");
    let r = polypush_env(
        &cfg,
        &["run", "--url", &nginx.url("nopcm"), "--duration", "5"],
        &[("ALSA_CONFIG_PATH", conf.to_str().unwrap())],
    );
    assert_ne!(r.code, 0, "a missing ALSA device must fail the run");
    assert!(
        r.stderr.contains("set [audio] device"),
        "the error should say what to set:\n{}",
        r.stderr
    );
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("Unknown PCM polypush_no_such_pcm"))
        .unwrap_or_else(|| panic!("libasound's message is not in the log:\n{}", r.stderr));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("ALSA: Unknown PCM"), "{line}");
    assert!(
        line.contains("alsa_function=snd_pcm_open_noupdate"),
        "{line}"
    );
    assert!(
        !r.stderr.lines().any(|l| l.starts_with("ALSA lib")),
        "libasound printed on its own:\n{}",
        r.stderr
    );
}
