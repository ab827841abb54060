//! A small persistent thread pool for the per-token matmuls.
//!
//! Decoding one token runs ~4 parallel regions per layer; with rayon each region costs a
//! worker wake-up (futex + scheduler) when the workers have gone to sleep between regions.
//! [`SpinPool`] workers instead spin on an epoch counter for a short while (`SPIN`) after
//! each job, so back-to-back regions start within nanoseconds, and park on a condvar when
//! idle longer. The caller takes part in every job; tasks are handed out with one atomic
//! `fetch_add` each.
//!
//! [`with_pool`] makes a pool current on the calling thread; with `QSTREAM_POOL=spin`,
//! `kernels::matmul*` use the current pool when there is one, and rayon otherwise. The spin
//! pool is opt-in: measured, it does not beat rayon on a quiet machine and loses on a loaded
//! one (see `with_current`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_micros(300);

/// One parallel job: `f(i)` for every `i < n`.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
}

impl Job<'_> {
    /// Take and run tasks until none are left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= self.n {
                return;
            }
            (self.f)(i);
            self.done.fetch_add(1, Release);
        }
    }
}

struct Shared {
    epoch: AtomicU64,
    /// the current job (null when none); points at the caller's stack while it runs
    job: AtomicPtr<Job<'static>>,
    /// workers between "saw a new epoch" and "done with the job pointer"
    active: AtomicUsize,
    sleeping: AtomicUsize,
    stop: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

/// A persistent pool of `threads − 1` spinning workers plus the calling thread.
pub struct SpinPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// one job at a time; a concurrent caller runs its job alone
    busy: AtomicBool,
}

impl SpinPool {
    /// A pool that runs jobs on `threads` threads (the caller and `threads − 1` workers).
    pub fn new(threads: usize) -> std::io::Result<SpinPool> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            active: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        let mut workers = Vec::new();
        for i in 1..threads.max(1) {
            let s = shared.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("qstream-spin-{i}"))
                    .spawn(move || worker(&s))?,
            );
        }
        Ok(SpinPool {
            shared,
            workers,
            busy: AtomicBool::new(false),
        })
    }

    /// Threads a job runs on (workers + the caller).
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Run `f(i)` for every `i < n` across the pool; returns when all are done.
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if n <= 1 || self.workers.is_empty() || self.busy.swap(true, Acquire) {
            (0..n).for_each(f);
            return;
        }
        let job = Job {
            f,
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        };
        let sh = &*self.shared;
        // SAFETY (lifetime erasure): the pointer is published only until this function
        // clears it and has seen `active == 0`, so no worker uses it after `job` dies.
        let ptr = &job as *const Job<'_> as *mut Job<'static>;
        sh.job.store(ptr, SeqCst);
        sh.epoch.fetch_add(1, SeqCst);
        if sh.sleeping.load(SeqCst) > 0 {
            let _g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.cv.notify_all();
        }
        job.work();
        while job.done.load(Acquire) < n {
            std::hint::spin_loop();
        }
        sh.job.store(std::ptr::null_mut(), SeqCst);
        while sh.active.load(SeqCst) > 0 {
            std::hint::spin_loop();
        }
        self.busy.store(false, Release);
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.cv.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(sh: &Shared) {
    let mut seen = sh.epoch.load(SeqCst);
    loop {
        let t0 = Instant::now();
        let mut spins = 0u32;
        loop {
            if sh.stop.load(Relaxed) {
                return;
            }
            let e = sh.epoch.load(Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins += 1;
            if !spins.is_multiple_of(64) || t0.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.sleeping.fetch_add(1, SeqCst);
            while sh.epoch.load(SeqCst) == seen && !sh.stop.load(SeqCst) {
                g = sh.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            sh.sleeping.fetch_sub(1, SeqCst);
            drop(g);
        }
        sh.active.fetch_add(1, SeqCst);
        let p = sh.job.load(SeqCst);
        if !p.is_null() {
            // SAFETY: a non-null pointer read after incrementing `active` stays valid until
            // `active` drops back: `run` clears the pointer and then waits for `active == 0`
            // before its `Job` goes out of scope (SeqCst orders the two sides).
            unsafe { (*p).work() };
        }
        sh.active.fetch_sub(1, SeqCst);
    }
}

thread_local! {
    static CURRENT: Cell<*const SpinPool> = const { Cell::new(std::ptr::null()) };
}

/// Run `f` with `pool` as the calling thread's current pool (restored afterwards).
pub fn with_pool<R>(pool: &SpinPool, f: impl FnOnce() -> R) -> R {
    struct Restore(*const SpinPool);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(pool as *const SpinPool)));
    f()
}

/// Run `f` with the calling thread's current pool, if any.
///
/// The spin pools are opt-in (`QSTREAM_POOL=spin`); by default every region runs on rayon.
/// Measured on SmolLM2 `keep`, 2 threads, tg64 (docs/benchmarks.md, "Thread pools"): on a
/// quiet machine the two are level (medians 185 vs 204 tok/s), on a loaded one the spinning
/// workers lose time slices (98 vs 131 tok/s).
pub(super) fn with_current<R>(f: impl FnOnce(Option<&SpinPool>) -> R) -> R {
    static SPIN_ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*SPIN_ON.get_or_init(|| std::env::var("QSTREAM_POOL").is_ok_and(|v| v == "spin")) {
        return f(None);
    }
    let p = CURRENT.with(|c| c.get());
    // SAFETY: a non-null CURRENT was set by `with_pool` from a reference that outlives
    // the `with_pool` call, and is reset when that call returns (also on unwind).
    f(unsafe { p.as_ref() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn run_calls_every_index_once_on_every_pool_size() {
        for threads in [1, 2, 3] {
            let pool = SpinPool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads.max(1));
            for n in [0, 1, 2, 7, 64] {
                let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, SeqCst);
                });
                assert!(
                    hits.iter().all(|h| h.load(SeqCst) == 1),
                    "threads {threads} n {n}"
                );
            }
        }
    }
}
