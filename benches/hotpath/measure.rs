//! Measuring: the counting global allocator, CPU time from `getrusage`, thread pinning, and the
//! measured windows ([`Measure`], [`Window`], [`measure`] and its async twin
//! [`measure_async!`]) every stage and pipeline reports through.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Counting allocator

struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread's allocations are counted. Const-initialized and without a
    /// destructor, so reading it never allocates.
    pub(super) static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

fn count(bytes: usize) {
    if counting() {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(bytes as u64, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are plain atomics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    /// A grow or shrink counts as one allocation of the new size: it may move (and copy) the
    /// block, which is what a per-packet allocation costs.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AllocSnap {
    pub(super) allocs: u64,
    pub(super) bytes: u64,
}

impl AllocSnap {
    pub(super) fn now() -> Self {
        Self {
            allocs: ALLOCS.load(Relaxed),
            bytes: ALLOC_BYTES.load(Relaxed),
        }
    }

    pub(super) fn since(self, start: AllocSnap) -> AllocSnap {
        AllocSnap {
            allocs: self.allocs - start.allocs,
            bytes: self.bytes - start.bytes,
        }
    }

    pub(super) fn add(&mut self, d: AllocSnap) {
        self.allocs += d.allocs;
        self.bytes += d.bytes;
    }
}

// ---------------------------------------------------------------------------------------------
// CPU time

/// User and system CPU time.
fn rusage(who: libc::c_int) -> (Duration, Duration) {
    // SAFETY: getrusage writes one `rusage` through the pointer, which points at a zeroed,
    // live value.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// This thread's (user, system) CPU time.
fn thread_cpu() -> (Duration, Duration) {
    rusage(libc::RUSAGE_THREAD)
}

fn process_cpu() -> Duration {
    let (user, sys) = rusage(libc::RUSAGE_SELF);
    user + sys
}

/// With `HOTPATH_PIN=1`, the first two CPUs this process may run on: the sender's and the
/// peer's. Off by default: on a shared machine a pinned thread cannot move away from a busy
/// CPU, which made runs noisier, not steadier.
pub(super) fn cpu_pair() -> Option<(usize, usize)> {
    if std::env::var("HOTPATH_PIN").map_or(true, |v| v != "1") {
        return None;
    }
    // SAFETY: sched_getaffinity fills the zeroed cpu_set_t whose size is passed; CPU_ISSET
    // reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let mut cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set));
        Some((cpus.next()?, cpus.next()?))
    }
}

/// Pins the calling thread to `cpu` (best effort).
pub(super) fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one CPU set, passed with its size, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Where the peer thread runs; `u64::MAX` while unpinned.
pub(super) static PEER_CPU: AtomicU64 = AtomicU64::new(u64::MAX);

// ---------------------------------------------------------------------------------------------
// Measuring

/// Counters of one measured window.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Measure {
    pub(super) packets: u64,
    /// FLV body bytes.
    pub(super) payload: u64,
    /// Bytes produced for / written to the socket (0 where the stage has no wire side).
    pub(super) wire: u64,
    pub(super) wall: Duration,
    /// The sender thread's user + system CPU time, and the system part.
    pub(super) cpu_thread: Duration,
    pub(super) cpu_thread_sys: Duration,
    pub(super) cpu_process: Duration,
    pub(super) alloc: AllocSnap,
    /// Slowest and fastest payload Gbit/s over the windows this one is the median of.
    pub(super) gbit_range: (f64, f64),
}

impl Measure {
    pub(super) fn gbit(&self) -> f64 {
        self.payload as f64 * 8.0 / self.wall.as_secs_f64() / 1e9
    }

    /// Packets per second.
    pub(super) fn pps(&self) -> f64 {
        self.packets as f64 / self.wall.as_secs_f64()
    }
}

/// Each measurement is split into this many windows and the median window (by payload
/// throughput) is reported, with the range: the machine may be shared.
pub(super) const REPEATS: u32 = 3;

pub(super) fn median(mut windows: Vec<Measure>) -> Measure {
    windows.sort_by(|a, b| a.gbit().total_cmp(&b.gbit()));
    let range = (windows[0].gbit(), windows[windows.len() - 1].gbit());
    let mut m = windows[windows.len() / 2];
    m.gbit_range = range;
    m
}

/// Starts counting on this thread; `stop` ends the window.
pub(super) struct Window {
    pub(super) start: Instant,
    cpu_thread: (Duration, Duration),
    cpu_process: Duration,
    alloc: AllocSnap,
}

impl Window {
    pub(super) fn start() -> Window {
        COUNTING.with(|c| c.set(true));
        Window {
            alloc: AllocSnap::now(),
            cpu_thread: thread_cpu(),
            cpu_process: process_cpu(),
            start: Instant::now(),
        }
    }

    pub(super) fn stop(self, packets: u64, payload: u64, wire: u64) -> Measure {
        let wall = self.start.elapsed();
        let cpu_process = process_cpu() - self.cpu_process;
        let (user, sys) = thread_cpu();
        let cpu_thread = user + sys - self.cpu_thread.0 - self.cpu_thread.1;
        let cpu_thread_sys = sys - self.cpu_thread.1;
        let alloc = AllocSnap::now().since(self.alloc);
        COUNTING.with(|c| c.set(false));
        Measure {
            packets,
            payload,
            wire,
            wall,
            cpu_thread,
            cpu_thread_sys,
            cpu_process,
            alloc,
            gbit_range: (0.0, 0.0),
        }
    }
}

pub(super) fn secs_from_env(name: &str, default: f64) -> Duration {
    let s = std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(default);
    Duration::from_secs_f64(s)
}

pub(super) const WARMUP: Duration = Duration::from_millis(300);

/// Runs `pass` (one pass over the media, returns packets, payload and wire bytes) for the
/// warm-up and then for at least `secs`.
pub(super) fn measure(secs: Duration, mut pass: impl FnMut(u64) -> (u64, u64, u64)) -> Measure {
    let mut n = 0;
    let start = Instant::now();
    while n == 0 || start.elapsed() < WARMUP {
        pass(n);
        n += 1;
    }
    let mut windows = Vec::new();
    for _ in 0..REPEATS {
        let w = Window::start();
        let (mut packets, mut payload, mut wire) = (0, 0, 0);
        while packets == 0 || w.start.elapsed() < secs / REPEATS {
            let (p, b, x) = pass(n);
            packets += p;
            payload += b;
            wire += x;
            n += 1;
        }
        windows.push(w.stop(packets, payload, wire));
    }
    median(windows)
}

/// Async twin of [`measure`] for the stages that own a socket: `$body` (one pass, may
/// `.await`, evaluates to packets, payload and wire bytes) runs for the warm-up and then for at
/// least `$secs`. A macro because the pass borrows the caller's socket mutably across awaits.
macro_rules! measure_async {
    ($secs:expr, |$pass:ident| $body:block) => {{
        let mut n: u64 = 0;
        let start = ::std::time::Instant::now();
        while n == 0 || start.elapsed() < $crate::measure::WARMUP {
            let $pass = n;
            let _: (u64, u64, u64) = $body;
            n += 1;
        }
        let mut windows = Vec::new();
        for _ in 0..$crate::measure::REPEATS {
            let w = $crate::measure::Window::start();
            let (mut packets, mut payload, mut wire) = (0u64, 0u64, 0u64);
            while packets == 0 || w.start.elapsed() < $secs / $crate::measure::REPEATS {
                let $pass = n;
                let (p, b, x): (u64, u64, u64) = $body;
                packets += p;
                payload += b;
                wire += x;
                n += 1;
            }
            windows.push(w.stop(packets, payload, wire));
        }
        $crate::measure::median(windows)
    }};
}
pub(super) use measure_async;
