//! libasound's own error messages, through `tracing` instead of raw lines on stderr.
//!
//! libasound (alsa-lib) prints its errors itself, by default as `ALSA lib pcm.c:2666:
//! (snd_pcm_open_noupdate) Unknown PCM hw:9` straight to stderr: outside our log format, past
//! the journal's fields and the repeat limiter, and on the terminal of whoever runs
//! `polypush run`. [`install`] replaces that handler, process-wide, before FFmpeg's alsa input
//! opens any device ([`super::init_ffmpeg`] calls it), so each message becomes one WARN event
//! with libasound's `alsa_file`, `alsa_line`, `alsa_function` and `errno` as fields.
//!
//! The handler is variadic in C (`const char *fmt, ...`), which stable Rust cannot define, so
//! a C shim (`alsa_log.c`, built by `build.rs` with the `cc` crate) formats the message with
//! `vsnprintf` and calls [`sink`] with the finished text. The shim finds
//! `snd_lib_error_set_handler` with `dlsym` in the libasound that libavdevice already
//! loaded: no ALSA headers or extra link, and with an FFmpeg built without ALSA there is
//! nothing to install into ([`install`] says so).

use std::ffi::{c_char, c_int, CStr};
use std::sync::OnceLock;

type Sink = extern "C" fn(*const c_char, c_int, *const c_char, c_int, *const c_char);

extern "C" {
    /// From `alsa_log.c`: routes libasound's errors to `sink`; 0 when installed, -1 when no
    /// libasound is loaded.
    fn polypush_alsa_log_install(sink: Sink) -> c_int;
}

/// Installs the handler once per process; whether libasound is there to take it. Must run
/// before anything opens an ALSA device (libasound's default handler prints until then).
pub(super) fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    // SAFETY: the shim only stores the function pointer and calls libasound's setter;
    // `sink` matches the shim's `polypush_alsa_sink` type.
    *INSTALLED.get_or_init(|| unsafe { polypush_alsa_log_install(sink) } == 0)
}

/// Turns a C string from libasound into text; `""` for NULL.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
unsafe fn text<'a>(p: *const c_char) -> std::borrow::Cow<'a, str> {
    if p.is_null() {
        return "".into();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy()
}

/// Called by the shim for each libasound error, on whichever thread libasound runs.
extern "C" fn sink(
    file: *const c_char,
    line: c_int,
    function: *const c_char,
    err: c_int,
    message: *const c_char,
) {
    // Never unwind into C.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: libasound passes __FILE__ and __func__ literals (or NULL), and the shim a
        // NUL-terminated buffer that outlives this call.
        let (file, function, message) = unsafe { (text(file), text(function), text(message)) };
        let message = message.trim_end();
        // libasound's own handler appends `: snd_strerror(err)` when err is set; errno values
        // below 500000 are the system's, the rest ALSA's own (their number is kept).
        let detail = match err {
            0 => String::new(),
            e if e.abs() < 500_000 => format!(": {}", std::io::Error::from_raw_os_error(e.abs())),
            e => format!(": ALSA error {e}"),
        };
        tracing::warn!(
            alsa_file = %file,
            alsa_line = line,
            alsa_function = %function,
            errno = err,
            "ALSA: {message}{detail}"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    /// Every event as `LEVEL field=value … message`.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    struct Fields(String);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            let mut v = Fields(event.metadata().level().to_string());
            event.record(&mut v);
            self.0.lock().unwrap().push(v.0);
        }
    }

    /// libasound's `snd_pcm_open`, found the way the shim finds its setter.
    type PcmOpen =
        unsafe extern "C" fn(*mut *mut std::ffi::c_void, *const c_char, c_int, c_int) -> c_int;

    #[test]
    fn an_alsa_error_becomes_a_warn_event_with_libasounds_fields() {
        crate::capture::init_ffmpeg();
        assert!(install(), "libasound is not loaded with libavdevice");
        // SAFETY: dlsym with a NUL-terminated name; the symbol, when there, is snd_pcm_open.
        let open = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"snd_pcm_open".as_ptr()) };
        assert!(!open.is_null());
        // SAFETY: the symbol's C signature is `PcmOpen`.
        let open: PcmOpen = unsafe { std::mem::transmute(open) };
        let out = Capture::default();
        let subscriber = tracing_subscriber::registry().with(out.clone());
        let rc = tracing::subscriber::with_default(subscriber, || {
            let mut pcm = std::ptr::null_mut();
            // SAFETY: a valid out-pointer and name; SND_PCM_STREAM_CAPTURE = 1. The open fails
            // (no such PCM), so there is nothing to close.
            unsafe { open(&mut pcm, c"polypush_no_such_pcm".as_ptr(), 1, 0) }
        });
        assert!(rc < 0, "opening a PCM that does not exist succeeded");
        let got = out.0.lock().unwrap().clone();
        let hit = got
            .iter()
            .find(|e| e.contains("Unknown PCM polypush_no_such_pcm"))
            .unwrap_or_else(|| panic!("no event for the failed open: {got:?}"));
        assert!(hit.starts_with("WARN"), "{hit}");
        assert!(hit.contains("alsa_file=pcm.c"), "{hit}");
        assert!(hit.contains("alsa_function=snd_pcm_open_noupdate"), "{hit}");
        assert!(hit.contains("alsa_line="), "{hit}");
    }
}
