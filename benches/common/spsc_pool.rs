//! A second ceiling, below the first (`minimal_pool.rs`) in what it does and
//! above it in speed: each worker has its own single-producer
//! single-consumer ring, the submitter deals calls to them in turn, so no
//! push or pop ever does a read-modify-write (a store to publish, a load to
//! see); a full ring makes the submitter wait. One allocation per call, as
//! there. No stealing (a slow call holds up every call dealt behind it), no
//! unbounded queue, no cancel, no shutdown but dropping the pool: a design no
//! library could ship, kept to bound what one could reach on this machine
//! (BENCHMARKS.md, "Thread pool: the ceiling").

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;

use crate::one_call::{Call, Outcome, DONE};

const RING: usize = 4096;

trait Run: Send + Sync {
    fn run(&self);
}

impl<F: FnOnce() -> R + Send, R: Send> Run for Call<F, R> {
    fn run(&self) {
        // SAFETY: the one worker whose ring held the call runs it, once.
        unsafe { self.run_and_store() };
        self.state.store(DONE, Ordering::Release);
    }
}

#[repr(align(128))]
struct Line<T>(T);

/// A ring slot: empty, or a call published by `tail`.
type Slot = UnsafeCell<MaybeUninit<Arc<dyn Run>>>;

/// One worker's ring: `tail` written by the submitter, `head` by the worker.
struct Ring {
    slots: Box<[Slot]>,
    head: Line<AtomicUsize>,
    tail: Line<AtomicUsize>,
    /// Set by the worker before it parks; the submitter unparks it.
    parked: Line<AtomicBool>,
    closed: AtomicBool,
}

// SAFETY: a slot is written by the one submitter before `tail` passes it
// (Release) and read by the one worker after it saw that `tail` (Acquire),
// and not written again before `head` passes it.
unsafe impl Sync for Ring {}

/// What `submit` returns.
pub struct Handle<R> {
    state: Arc<dyn Outcome<R>>,
}

impl<R> Handle<R> {
    /// Waits (spinning, then yielding) for the result and takes it.
    pub fn result(self) -> R {
        let mut spins = 0u32;
        while self.state.state().load(Ordering::Acquire) != DONE {
            if spins < 64 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        self.state.take()
    }
}

/// The pool: one ring and one thread per worker, until dropped.
pub struct SpscPool {
    rings: Vec<Arc<Ring>>,
    threads: Vec<(Thread, std::thread::JoinHandle<()>)>,
    /// The ring the next call goes to (the submitting thread only).
    next: std::cell::Cell<usize>,
}

impl SpscPool {
    pub fn new(workers: usize) -> SpscPool {
        let rings: Vec<Arc<Ring>> = (0..workers)
            .map(|_| {
                Arc::new(Ring {
                    slots: (0..RING)
                        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
                        .collect(),
                    head: Line(AtomicUsize::new(0)),
                    tail: Line(AtomicUsize::new(0)),
                    parked: Line(AtomicBool::new(false)),
                    closed: AtomicBool::new(false),
                })
            })
            .collect();
        let threads = rings
            .iter()
            .map(|ring| {
                let ring = ring.clone();
                let handle = std::thread::spawn(move || work(&ring));
                (handle.thread().clone(), handle)
            })
            .collect();
        SpscPool {
            rings,
            threads,
            next: std::cell::Cell::new(0),
        }
    }

    pub fn submit<F, R>(&self, f: F) -> Handle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let call = Arc::new(Call::new(f));
        let i = self.next.get();
        self.next.set((i + 1) % self.rings.len());
        let ring = &self.rings[i];
        let tail = ring.tail.0.load(Ordering::Relaxed);
        while tail - ring.head.0.load(Ordering::Acquire) == RING {
            std::thread::yield_now();
        }
        // SAFETY: see `Sync` for `Ring`.
        unsafe { (*ring.slots[tail % RING].get()).write(call.clone()) };
        ring.tail.0.store(tail + 1, Ordering::Release);
        // Pairs with the worker's fence: it sees the call or we see it parked.
        fence(Ordering::SeqCst);
        if ring.parked.0.load(Ordering::Relaxed) {
            self.threads[i].0.unpark();
        }
        Handle { state: call }
    }
}

fn work(ring: &Ring) {
    let mut idle = 0u32;
    loop {
        let head = ring.head.0.load(Ordering::Relaxed);
        if head != ring.tail.0.load(Ordering::Acquire) {
            // SAFETY: see `Sync` for `Ring`.
            let call = unsafe { (*ring.slots[head % RING].get()).assume_init_read() };
            ring.head.0.store(head + 1, Ordering::Release);
            call.run();
            idle = 0;
            continue;
        }
        if ring.closed.load(Ordering::Acquire) {
            return;
        }
        idle += 1;
        if idle < 7 {
            for _ in 0..1 << idle {
                std::hint::spin_loop();
            }
        } else if idle < 8 {
            std::thread::yield_now();
        } else {
            ring.parked.0.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if head == ring.tail.0.load(Ordering::Acquire) && !ring.closed.load(Ordering::Acquire) {
                std::thread::park();
            }
            ring.parked.0.store(false, Ordering::Relaxed);
            idle = 0;
        }
    }
}

impl Drop for SpscPool {
    fn drop(&mut self) {
        for (ring, (thread, _)) in self.rings.iter().zip(&self.threads) {
            ring.closed.store(true, Ordering::Release);
            thread.unpark();
        }
        for (_, handle) in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}
