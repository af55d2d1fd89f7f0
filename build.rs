//! Compiles the one C file: the shim that formats libasound's variadic error messages and
//! hands them to Rust (src/capture/alsa_log.c; stable Rust cannot define a variadic function).

fn main() {
    println!("cargo:rerun-if-changed=src/capture/alsa_log.c");
    cc::Build::new()
        .file("src/capture/alsa_log.c")
        .warnings(true)
        .extra_warnings(true)
        .compile("polypush_alsa_log");
}
