//! A running `polypush run` (the service) as a child process: its log collected on a thread,
//! signals by its own PID, a bounded finish, killed on drop.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A running `polypush run` whose stderr is collected on a thread; waits wake on new output
/// and on the exit, never by polling.
pub struct Daemon {
    child: Arc<Mutex<Child>>,
    pid: u32,
    log: Arc<(Mutex<String>, Condvar)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    pub fn start(cfg: &Path, args: &[&str]) -> Daemon {
        Self::start_env(cfg, args, &[])
    }

    /// [`Daemon::start`] with more environment (such as `STATE_DIRECTORY`).
    pub fn start_env(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_polypush"))
            .envs(env.iter().copied())
            .arg("--config")
            .arg(cfg)
            .args(["--log-level", "info", "--json", "run"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let log: Arc<(Mutex<String>, Condvar)> = Arc::default();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.0
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
                sink.1.notify_all();
            }
        });
        Daemon {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
            log,
            reader: Some(reader),
        }
    }

    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().clone()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let guard = self.log.0.lock().unwrap();
        let (guard, _) = self
            .log
            .1
            .wait_timeout_while(guard, limit, |log| !log.contains(needle))
            .unwrap();
        guard.contains(needle)
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's PID, which we have not reaped yet.
        unsafe {
            libc::kill(self.pid as libc::pid_t, sig);
        }
    }

    /// Waits for the exit (bounded; killed by PID past it); the summary JSON and the log.
    pub fn finish(mut self, limit: Duration) -> (bool, serde_json::Value, String) {
        let (tx, rx) = std::sync::mpsc::channel();
        let child = self.child.clone();
        std::thread::spawn(move || {
            let status = child.lock().unwrap().wait();
            let _ = tx.send(status);
        });
        let status = match rx.recv_timeout(limit) {
            Ok(status) => status.ok(),
            Err(_) => {
                self.signal(libc::SIGKILL);
                None
            }
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut out = String::new();
        if let Some(mut o) = self.child.lock().unwrap().stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        let summary = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
        (status.is_some_and(|s| s.success()), summary, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.try_lock() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
