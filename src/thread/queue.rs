//! The thread pool's queue: a fixed lock-free ring, a locked overflow
//! behind it, and workers that spin briefly before they sleep.
//!
//! Why not a linked-block channel (crossbeam's unbounded one, std's mpsc):
//! it allocates its blocks on the submitting thread and frees them on the
//! worker that empties them. With glibc, that free takes the lock of the
//! submitter's arena, which the submitter takes for nearly every task it
//! allocates; `perf` showed the two contending for it, with futex sleeps
//! and wake-ups on both sides (BENCHMARKS.md, "eleventh round"). A ring
//! allocated once frees nothing per message; nor does the overflow, a
//! `VecDeque` that only grows. (One lock for everything was tried too: the
//! submitter and both workers then fight over that lock instead.)
//!
//! Order: while the overflow holds anything, pushes go there, and workers
//! take from the ring first, so a call never overtakes one queued before
//! it by the same thread. A worker that empties the ring refills it from
//! the overflow under the overflow's lock, so a long burst of submits
//! costs the submitter an uncontended lock and the workers a lock per
//! refill, not per call.
//!
//! Sleeping: a worker that finds nothing spins, then yields, much as
//! crossbeam's `recv` does (a worker that sleeps at once makes every submit
//! pay a wake-up), then sleeps on the condvar. A push wakes a sleeper only
//! when one has not been woken already, so a burst of pushes while a
//! worker wakes up costs one wake-up, not one per push.

use crate::sync::{self, fence, lock, AtomicBool, AtomicUsize, Condvar, Mutex, Ordering};
#[cfg(not(loom))]
use crossbeam_queue::ArrayQueue;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The ring's capacity (messages are 24 bytes).
#[cfg(not(loom))]
const RING: usize = 1024;
/// One slot under loom, so the models go through the overflow and refills.
#[cfg(loom)]
const RING: usize = 1;
/// The most an emptied overflow keeps allocated (messages) …
const KEEP: usize = 4 * RING;
/// … once it has been empty this long (a push looks).
#[cfg(not(test))]
const TRIM_AFTER: Duration = Duration::from_secs(1);
#[cfg(test)]
const TRIM_AFTER: Duration = Duration::from_millis(50);
/// A push reads the clock for that only once in this many pushes: reading
/// it on every push was 3.5 % of the submitting thread's time (perf, 2M
/// submits), for a check that needs only be late by a few pushes.
const LOOK_EVERY: u32 = 256;
/// Spins (`1 << step` pause instructions) while `step` is below this …
#[cfg(not(loom))]
const SPIN_STEPS: u32 = 6;
/// … then yields the CPU once, then sleeps. (crossbeam yields four times;
/// on two cores, with the submitter a third thread, one yield measured
/// best: 2M submits 0.60 s against 0.72 s with four, 0.90 s with none,
/// context switches 9k against 57k and 94k; BENCHMARKS.md.)
#[cfg(not(loom))]
const YIELD_STEPS: u32 = SPIN_STEPS + 1;
/// Under loom a worker looks once and then sleeps: what the models check
/// is the sleeping and waking, and spinning would only multiply states.
#[cfg(loom)]
const SPIN_STEPS: u32 = 0;
#[cfg(loom)]
const YIELD_STEPS: u32 = 0;

/// Under loom, the ring is a locked `VecDeque` of the same capacity
/// (crossbeam's ring is not built on loom's atomics). Its lock orders more
/// than `ArrayQueue`'s atomics do, so the models check the sleep and
/// wake-up accounting and `close`, not the fences that pair a push with a
/// sleeper (those stand on `ArrayQueue`'s sequentially consistent tail).
#[cfg(loom)]
struct ArrayQueue<M>(Mutex<VecDeque<M>>, usize);

#[cfg(loom)]
impl<M> ArrayQueue<M> {
    fn new(cap: usize) -> Self {
        ArrayQueue(Mutex::new(VecDeque::new()), cap)
    }
    fn push(&self, m: M) -> Result<(), M> {
        let mut q = lock(&self.0);
        if q.len() >= self.1 {
            return Err(m);
        }
        q.push_back(m);
        Ok(())
    }
    fn pop(&self) -> Option<M> {
        lock(&self.0).pop_front()
    }
    fn len(&self) -> usize {
        lock(&self.0).len()
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The fields fall into cache lines by who writes them: the submitters
/// (`overflow`'s lock, taken for every push), the workers while they spin
/// (`flags`, written rarely, read all the time) and sleepers (`sleep`).
/// `perf` showed a push's lock missing the cache on almost every call
/// while spinning workers kept reading a flag on the lock's line.
pub(super) struct Queue<M> {
    ring: ArrayQueue<M>,
    overflow: Padded<Mutex<Overflow<M>>>,
    flags: Padded<Flags>,
    sleep: Padded<Sleeping>,
}

/// The messages behind a full ring, and when they last ran out.
struct Overflow<M> {
    queue: VecDeque<M>,
    /// When a refill last emptied `queue` (while it held more than `KEEP`).
    emptied: Option<Instant>,
    /// Pushes since `emptied` was set, for [`LOOK_EVERY`].
    pushes: u32,
    /// Pushes ever: the number the next push hands to its `make`.
    numbered: u64,
}

impl<M> Overflow<M> {
    /// Gives back a burst's memory once the overflow has stayed empty for
    /// [`TRIM_AFTER`]; done by a push (which holds the lock anyway, and
    /// whose thread allocated the memory), never while a burst runs, where
    /// it would be freed and grown again each time the workers catch up.
    fn trim_if_idle(&mut self) {
        let Some(emptied) = self.emptied else {
            return;
        };
        self.pushes = self.pushes.wrapping_add(1);
        if self.pushes.is_multiple_of(LOOK_EVERY) && emptied.elapsed() >= TRIM_AFTER {
            if self.queue.capacity() > KEEP {
                self.queue = VecDeque::new();
            }
            self.emptied = None;
        }
    }
}

struct Flags {
    /// The overflow's length, for looking without its lock.
    spilled: AtomicUsize,
    /// Set once by `close`.
    closed: AtomicBool,
}

struct Sleeping {
    lock: Mutex<Sleep>,
    cond: Condvar,
    /// Sleepers not woken yet (`sleepers - woken`), for pushes to look at
    /// without the sleep lock.
    unwoken: AtomicUsize,
}

impl Sleeping {
    /// Publishes `unwoken` after `sleep` changed (under its lock).
    fn publish(&self, sleep: &Sleep) {
        self.unwoken.store(
            sleep.sleepers.saturating_sub(sleep.woken),
            Ordering::Relaxed,
        );
    }
}

/// A value alone on its cache line (two lines: adjacent-line prefetch).
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[derive(Default)]
struct Sleep {
    /// Threads waiting on `cond`.
    sleepers: usize,
    /// Wake-ups sent that no sleeper has consumed yet.
    woken: usize,
}

/// Why [`Queue::pop_timeout`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Empty {
    /// Nothing arrived in time.
    Timeout,
    /// Closed, and nothing is left.
    Closed,
}

impl<M> Queue<M> {
    pub(super) fn new() -> Self {
        Queue {
            ring: ArrayQueue::new(RING),
            overflow: Padded(Mutex::new(Overflow {
                queue: VecDeque::new(),
                emptied: None,
                pushes: 0,
                numbered: 0,
            })),
            flags: Padded(Flags {
                spilled: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
            }),
            sleep: Padded(Sleeping {
                lock: Mutex::new(Sleep::default()),
                cond: Condvar::new(),
                unwoken: AtomicUsize::new(0),
            }),
        }
    }

    /// Queues the message `make` turns `item` into; hands `item` back when
    /// the queue is closed. `make` runs under the overflow's lock, which
    /// `close` takes too, so a message is either queued before `close`
    /// returns or not made at all; it gets the push's number (0, 1, 2, …
    /// in the order of the queue: a plain counter under that lock, where
    /// an atomic of its own was one more locked instruction per call).
    pub(super) fn push<J>(&self, item: J, make: impl FnOnce(J, u64) -> M) -> Result<(), J> {
        let mut overflow = lock(&self.overflow);
        if self.flags.closed.load(Ordering::Relaxed) {
            return Err(item);
        }
        let number = overflow.numbered;
        overflow.numbered += 1;
        let message = make(item, number);
        // The ring only while the overflow is empty (see the module docs).
        let spilled = if overflow.queue.is_empty() {
            overflow.trim_if_idle();
            self.ring.push(message).err()
        } else {
            Some(message)
        };
        if let Some(message) = spilled {
            overflow.queue.push_back(message);
            self.flags
                .spilled
                .store(overflow.queue.len(), Ordering::Release);
        }
        drop(overflow);
        self.wake_one();
        Ok(())
    }

    /// Wakes a sleeper, if one is not woken already.
    fn wake_one(&self) {
        // Pairs with the fence in `sleep_unless_ready`: either this sees
        // the sleeper counted, or the sleeper sees the message.
        fence(Ordering::SeqCst);
        if self.sleep.unwoken.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut sleep = lock(&self.sleep.lock);
        if sleep.sleepers > sleep.woken {
            sleep.woken += 1;
            self.sleep.publish(&sleep);
            drop(sleep);
            self.sleep.cond.notify_one();
        }
    }

    /// Takes the next message without waiting (`None`: none now).
    pub(super) fn try_pop(&self) -> Option<M> {
        if let Some(message) = self.ring.pop() {
            return Some(message);
        }
        if self.flags.spilled.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut overflow = lock(&self.overflow);
        // Under the lock no push reaches the ring while the overflow holds
        // something, so a message found there now is older than the rest.
        if let Some(message) = self.ring.pop() {
            return Some(message);
        }
        let message = overflow.queue.pop_front()?;
        while self.ring.len() < RING / 2 {
            match overflow.queue.pop_front() {
                Some(next) => {
                    if let Err(next) = self.ring.push(next) {
                        overflow.queue.push_front(next);
                        break;
                    }
                }
                None => break,
            }
        }
        if overflow.queue.is_empty() && overflow.queue.capacity() > KEEP {
            overflow.emptied = Some(Instant::now());
            overflow.pushes = 0;
        }
        self.flags
            .spilled
            .store(overflow.queue.len(), Ordering::Release);
        Some(message)
    }

    fn ready(&self) -> bool {
        !self.ring.is_empty()
            || self.flags.spilled.load(Ordering::Acquire) > 0
            || self.flags.closed.load(Ordering::Acquire)
    }

    /// Takes the next message, waiting for one; `None` once closed and empty.
    pub(super) fn pop(&self) -> Option<M> {
        self.pop_until(None).ok()
    }

    /// Takes the next message, waiting at most `timeout` for one.
    pub(super) fn pop_timeout(&self, timeout: Duration) -> Result<M, Empty> {
        self.pop_until(Some(Instant::now() + timeout))
    }

    fn pop_until(&self, deadline: Option<Instant>) -> Result<M, Empty> {
        let mut step = 0;
        loop {
            if let Some(message) = self.try_pop() {
                return Ok(message);
            }
            if self.flags.closed.load(Ordering::Acquire) {
                // `close` holds the overflow lock while it sets the flag,
                // so nothing is pushed after it: one more look suffices.
                return self.try_pop().ok_or(Empty::Closed);
            }
            if step < SPIN_STEPS {
                for _ in 0..1u32 << step {
                    std::hint::spin_loop();
                }
                step += 1;
                continue;
            }
            if step < YIELD_STEPS {
                std::thread::yield_now();
                step += 1;
                continue;
            }
            if !self.sleep_unless_ready(deadline) {
                return self.try_pop().ok_or(Empty::Timeout);
            }
        }
    }

    /// Sleeps until woken (or until `deadline`) unless something is ready.
    /// False when the deadline passed.
    fn sleep_unless_ready(&self, deadline: Option<Instant>) -> bool {
        let mut sleep = lock(&self.sleep.lock);
        sleep.sleepers += 1;
        self.sleep.publish(&sleep);
        // Pairs with the fence in `wake_one`.
        fence(Ordering::SeqCst);
        if !self.ready() {
            sleep = match deadline {
                None => sync::wait(&self.sleep.cond, sleep),
                Some(deadline) => sync::wait_timeout(
                    &self.sleep.cond,
                    sleep,
                    deadline.saturating_duration_since(Instant::now()),
                ),
            };
            // A spurious or timed-out return consumes a wake-up too: at
            // worst a later push wakes a thread it need not have.
            sleep.woken = sleep.woken.saturating_sub(1);
        }
        sleep.sleepers -= 1;
        self.sleep.publish(&sleep);
        deadline.is_none_or(|d| Instant::now() < d)
    }

    /// Refuses further pushes and wakes every sleeper; what is queued can
    /// still be taken.
    pub(super) fn close(&self) {
        let overflow = lock(&self.overflow);
        self.flags.closed.store(true, Ordering::Release);
        drop(overflow);
        drop(lock(&self.sleep.lock));
        self.sleep.cond.notify_all();
    }

    /// True once `close` was called.
    pub(super) fn is_closed(&self) -> bool {
        self.flags.closed.load(Ordering::Acquire)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_then_closed_after_the_rest_is_taken() {
        let q = Queue::new();
        // Past the ring's capacity, so the overflow and its refills take part.
        let n = 9 * RING as u32;
        for i in 0..n {
            q.push(i, |i, _| i).unwrap();
        }
        // Taking some and pushing more keeps the order too.
        let mut got: Vec<u32> = (0..RING + 7).map(|_| q.try_pop().unwrap()).collect();
        for i in n..n + 100 {
            q.push(i, |i, _| i).unwrap();
        }
        q.close();
        assert_eq!(q.push(7, |i, _| i), Err(7));
        assert!(q.is_closed());
        got.extend(std::iter::from_fn(|| q.pop()));
        assert_eq!(got, (0..n + 100).collect::<Vec<_>>());
        assert_eq!(q.pop_timeout(Duration::from_millis(1)), Err(Empty::Closed));
        // A burst's overflow memory goes back once it stayed empty a while.
        let q: Queue<u32> = Queue::new();
        for i in 0..n {
            q.push(i, |i, _| i).unwrap();
        }
        while q.try_pop().is_some() {}
        q.push(0, |i, _| i).unwrap();
        assert!(lock(&q.overflow).queue.capacity() > KEEP, "kept while busy");
        std::thread::sleep(TRIM_AFTER + Duration::from_millis(20));
        // The clock is read once in LOOK_EVERY pushes.
        for i in 1..LOOK_EVERY {
            q.push(i, |i, _| i).unwrap();
        }
        assert!(
            lock(&q.overflow).queue.capacity() <= KEEP,
            "given back when idle"
        );
        assert_eq!(
            std::iter::from_fn(|| q.try_pop()).collect::<Vec<_>>(),
            (0..LOOK_EVERY).collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_push_racing_close_is_taken_or_refused() {
        for _ in 0..20 {
            let q = Arc::new(Queue::new());
            let taker = {
                let q = q.clone();
                std::thread::spawn(move || std::iter::from_fn(|| q.pop()).count())
            };
            let pushers: Vec<_> = (0..3)
                .map(|_| {
                    let q = q.clone();
                    std::thread::spawn(move || {
                        (0..3000).filter(|&i| q.push(i, |i, _| i).is_ok()).count()
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_micros(300));
            q.close();
            let pushed: usize = pushers.into_iter().map(|p| p.join().unwrap()).sum();
            assert_eq!(taker.join().unwrap(), pushed);
        }
    }

    #[test]
    fn an_empty_queue_times_out_and_try_pop_does_not_wait() {
        let q: Queue<u8> = Queue::new();
        assert_eq!(q.try_pop(), None);
        let t = Instant::now();
        assert_eq!(
            q.pop_timeout(Duration::from_millis(30)),
            Err(Empty::Timeout)
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn sleepers_are_woken_by_pushes_and_by_close() {
        let q = Arc::new(Queue::new());
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || std::iter::from_fn(|| q.pop()).count())
            })
            .collect();
        // Let the takers fall asleep, then feed them in bursts.
        for burst in 0..20u32 {
            std::thread::sleep(Duration::from_millis(2));
            for i in 0..50 {
                q.push(burst * 50 + i, |i, _| i).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        let (done, give_up) = (
            std::sync::mpsc::channel(),
            Instant::now() + Duration::from_secs(20),
        );
        std::thread::spawn(move || {
            let total: usize = takers.into_iter().map(|t| t.join().unwrap()).sum();
            let _ = done.0.send(total);
        });
        let total = done
            .1
            .recv_timeout(give_up.saturating_duration_since(Instant::now()))
            .expect("every taker returns after close");
        assert_eq!(total, 1000);
    }
}

/// Loom models of sleeping and waking (run by `scripts/test.sh` with
/// `--cfg loom`): a sleeper that misses its wake-up leaves loom with every
/// thread blocked, which it reports as a deadlock.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Three threads and four locks explode without a bound; two
    /// preemptions cover the interleavings these races need.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(f);
    }

    #[test]
    fn loom_queue_pushes_wake_a_sleeping_worker() {
        model(|| {
            let q = Arc::new(Queue::new());
            let worker = {
                let q = q.clone();
                thread::spawn(move || (q.pop(), q.pop()))
            };
            q.push(1u8, |i, _| i).unwrap();
            q.push(2u8, |i, _| i).unwrap();
            assert_eq!(worker.join().unwrap(), (Some(1), Some(2)));
        });
    }

    #[test]
    fn loom_queue_two_workers_one_wake_up_each() {
        model(|| {
            let q = Arc::new(Queue::new());
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let q = q.clone();
                    thread::spawn(move || q.pop())
                })
                .collect();
            q.push(1u8, |i, _| i).unwrap();
            q.push(2u8, |i, _| i).unwrap();
            let mut got: Vec<u8> = workers
                .into_iter()
                .map(|w| w.join().unwrap().unwrap())
                .collect();
            got.sort_unstable();
            assert_eq!(got, vec![1, 2]);
        });
    }

    #[test]
    fn loom_queue_close_races_a_push_and_a_sleeper() {
        model(|| {
            let q = Arc::new(Queue::new());
            let worker = {
                let q = q.clone();
                thread::spawn(move || std::iter::from_fn(|| q.pop()).count())
            };
            let pusher = {
                let q = q.clone();
                thread::spawn(move || q.push(1u8, |i, _| i).is_ok())
            };
            q.close();
            let pushed = pusher.join().unwrap();
            assert_eq!(worker.join().unwrap(), usize::from(pushed));
        });
    }
}
