/* libasound's error messages, formatted in C and handed to Rust (src/capture/alsa_log.rs).
 *
 * libasound reports errors through one process-wide handler with a variadic signature
 * (`const char *fmt, ...`). Stable Rust cannot define a variadic function, so this file
 * does: it formats the message into a buffer with vsnprintf and calls a plain Rust callback.
 *
 * The handler is installed through dlsym(RTLD_DEFAULT, "snd_lib_error_set_handler") rather
 * than by linking libasound: libasound is already in the process (libavdevice needs it for
 * its alsa input), so no ALSA headers or link-time library are needed to build polypush,
 * and an FFmpeg built without ALSA simply has nothing to install the handler into. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>

/* alsa/error.h: typedef void (*snd_lib_error_handler_t)(const char *file, int line,
 *     const char *function, int err, const char *fmt, ...);
 * int snd_lib_error_set_handler(snd_lib_error_handler_t handler); */
typedef void (*snd_lib_error_handler_t)(const char *file, int line, const char *function,
                                        int err, const char *fmt, ...);
typedef int (*set_handler_fn)(snd_lib_error_handler_t handler);

/* The Rust side: the message already formatted, NUL-terminated. */
typedef void (*polypush_alsa_sink)(const char *file, int line, const char *function, int err,
                                   const char *message);

static polypush_alsa_sink sink;

static void handler(const char *file, int line, const char *function, int err, const char *fmt,
                    ...) {
    /* Longer messages are cut; libasound's are one line. */
    char buf[1024];
    buf[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
    }
    polypush_alsa_sink s = __atomic_load_n(&sink, __ATOMIC_ACQUIRE);
    if (s)
        s(file, line, function, err, buf);
}

/* Routes libasound's errors to `s`. 0 when installed, -1 when no libasound is loaded. */
int polypush_alsa_log_install(polypush_alsa_sink s) {
    __atomic_store_n(&sink, s, __ATOMIC_RELEASE);
    set_handler_fn set = (set_handler_fn)dlsym(RTLD_DEFAULT, "snd_lib_error_set_handler");
    if (!set)
        return -1;
    return set(handler) == 0 ? 0 : -1;
}
