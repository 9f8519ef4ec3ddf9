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
//! `VecDeque` that only grows until an idle worker gives it back. (One
//! lock for everything was tried too: the submitter and both workers then
//! fight over that lock instead.)
//!
//! A push is one compare-and-swap on the ring's tail while the ring has
//! room ([`super::ring`]): the flags that make it atomic with `close` and
//! keep it behind the overflow live in the word it moves. Only a push that
//! finds the ring full, or the overflow in use, takes the overflow's lock.
//!
//! Order: while the overflow holds anything, pushes go there, and workers
//! take from the ring first, so a call never overtakes one queued before
//! it by the same thread. A worker that empties the ring refills it from
//! the overflow under the overflow's lock, so a long burst of submits
//! costs the submitter an uncontended lock and the workers a lock per
//! refill, not per call. Every message is numbered with the ring position
//! it is (or, from the overflow, will be) read from: 0, 1, 2, … in the
//! order of the queue.
//!
//! Sleeping: a worker that finds nothing spins, then yields, much as
//! crossbeam's `recv` does (a worker that sleeps at once makes every submit
//! pay a wake-up), then sleeps on the condvar. A push wakes a sleeper only
//! when one has not been woken already, so a burst of pushes while a
//! worker wakes up costs one wake-up, not one per push.

use super::ring::{Backoff, Padded, Refused, Ring, CLOSED, SPILLED};
use crate::sync::{self, lock, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The ring's capacity (messages are 24 bytes).
#[cfg(not(loom))]
const RING: usize = 1024;
/// Two slots under loom (the fewest a ring can have), so the models go
/// through the overflow and refills.
#[cfg(loom)]
const RING: usize = 2;
/// The most an emptied overflow keeps allocated (messages) …
const KEEP: usize = 4 * RING;
/// … once it has been empty this long (an idle worker looks).
#[cfg(not(test))]
const TRIM_AFTER: Duration = Duration::from_secs(1);
#[cfg(test)]
const TRIM_AFTER: Duration = Duration::from_millis(50);
/// The fields fall into cache lines by who writes them: the ring's tail
/// (pushes) and head (workers) have a line each, the overflow's lock
/// (pushes that find the ring full, refills) and the sleepers theirs.
pub(super) struct Queue<M> {
    ring: Ring<M>,
    /// The messages behind a full ring.
    overflow: Padded<Mutex<VecDeque<M>>>,
    sleep: Padded<Sleeping>,
    /// What [`Sleeping::trim_at`] counts from.
    born: Instant,
}

struct Sleeping {
    lock: Mutex<Sleep>,
    cond: Condvar,
    /// Sleepers not woken yet (`sleepers - woken`), for pushes to look at
    /// without the sleep lock.
    unwoken: AtomicUsize,
    /// When an idle worker gives back the overflow's memory, in
    /// nanoseconds since `born` (0: nothing to give back). Set by the refill
    /// that emptied an overflow holding more than [`KEEP`], cleared by the
    /// next spill (a burst again) or the give-back, always under the
    /// overflow's lock; read without it by workers about to sleep.
    trim_at: AtomicU64,
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

/// A claimed position whose message is not written yet: if making it
/// panics, the position is written as nothing, so pops do not wait for it.
struct Hole<'a, M> {
    ring: &'a Ring<M>,
    pos: usize,
}

impl<M> Drop for Hole<'_, M> {
    fn drop(&mut self) {
        self.ring.write(self.pos, None);
    }
}

impl<M> Queue<M> {
    pub(super) fn new() -> Self {
        Queue {
            ring: Ring::new(RING),
            overflow: Padded(Mutex::new(VecDeque::new())),
            sleep: Padded(Sleeping {
                lock: Mutex::new(Sleep::default()),
                cond: Condvar::new(),
                unwoken: AtomicUsize::new(0),
                trim_at: AtomicU64::new(0),
            }),
            born: Instant::now(),
        }
    }

    /// Queues the message `make` turns `item` into; hands `item` back when
    /// the queue is closed (then `make` is not called). A message is either
    /// queued before `close` returns or not made at all. `make` gets the
    /// message's number: 0, 1, 2, … in the order of the queue.
    #[inline]
    pub(super) fn push<J>(&self, item: J, make: impl FnOnce(J, u64) -> M) -> Result<(), J> {
        match self.ring.claim(0) {
            Ok(pos) => self.fill(pos, item, make),
            Err(Refused::Flag(set)) if set & CLOSED != 0 => return Err(item),
            Err(_) => return self.push_locked(item, make),
        }
        self.wake_one();
        Ok(())
    }

    /// Makes and writes the message of a claimed position.
    #[inline]
    fn fill<J>(&self, pos: usize, item: J, make: impl FnOnce(J, u64) -> M) {
        let hole = Hole {
            ring: &self.ring,
            pos,
        };
        let message = make(item, pos as u64);
        std::mem::forget(hole);
        self.ring.write(pos, Some(message));
    }

    /// A push that found the ring full or the overflow in use (in a long
    /// burst, most pushes: the ring holds 1024).
    #[inline(never)]
    fn push_locked<J>(&self, item: J, make: impl FnOnce(J, u64) -> M) -> Result<(), J> {
        let mut overflow = lock(&self.overflow);
        // `close` sets the flag under this lock.
        if self.ring.flags() & CLOSED != 0 {
            return Err(item);
        }
        // `SPILLED` is set exactly while the overflow holds something: both
        // change under this lock.
        if overflow.is_empty() {
            if let Ok(pos) = self.ring.claim(SPILLED) {
                drop(overflow);
                self.fill(pos, item, make);
                self.wake_one();
                return Ok(());
            }
            // A burst again: nothing to give back while it lasts.
            self.sleep.trim_at.store(0, Ordering::Relaxed);
        }
        // With the flag set only refills move the tail, each taking the
        // overflow's first message: this one will be read from the
        // position after those queued before it. (Set already while the
        // overflow holds something: then a load, not a locked `or`; a
        // sleeper sees the flag through the fence in `wake_one`.)
        let next = if overflow.is_empty() {
            self.ring.set(SPILLED)
        } else {
            self.ring.next()
        };
        let message = make(item, (next + overflow.len()) as u64);
        overflow.push_back(message);
        drop(overflow);
        self.wake_one();
        Ok(())
    }

    /// Wakes a sleeper, if one is not woken already.
    fn wake_one(&self) {
        // Pairs with the fence in `sleep_unless_ready`: the push moved the
        // ring's tail (or set `SPILLED` in it) before this, the sleeper
        // counted itself before it looks at the tail, so either this sees
        // the sleeper counted or the sleeper sees the message. (The claim
        // is `SeqCst` too, which would do without this fence by the C++20
        // rules, but loom treats `SeqCst` accesses as `AcqRel` and only
        // checks the fence; measured, the fence cost nothing visible.)
        sync::fence(Ordering::SeqCst);
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
        if self.ring.flags() & SPILLED == 0 {
            return None;
        }
        self.refill();
        self.ring.pop()
    }

    /// Moves the overflow's first messages into the ring, up to half of it.
    fn refill(&self) {
        let mut overflow = lock(&self.overflow);
        // Counted once: the ring's length reads the head, which the other
        // workers keep moving (one look per message was two loads of a
        // line they write).
        let room = (RING / 2).saturating_sub(self.ring.len());
        for _ in 0..room {
            let Some(next) = overflow.pop_front() else {
                break;
            };
            match self.ring.claim(CLOSED | SPILLED) {
                Ok(pos) => self.ring.write(pos, Some(next)),
                Err(_) => {
                    overflow.push_front(next);
                    break;
                }
            }
        }
        if overflow.is_empty() {
            self.ring.clear(SPILLED);
            if overflow.capacity() > KEEP && self.sleep.trim_at.load(Ordering::Relaxed) == 0 {
                let due = (self.born.elapsed() + TRIM_AFTER).as_nanos();
                self.sleep
                    .trim_at
                    .store(u64::try_from(due).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
        }
    }

    /// Gives back a burst's memory once the overflow has stayed empty for
    /// [`TRIM_AFTER`]: done by a worker about to sleep, never while a
    /// burst runs, where it would be freed and grown again each time the
    /// workers catch up (that cost 10–20 %). `Some`: look again then.
    fn trim_if_idle(&self) -> Option<Instant> {
        let at = self.sleep.trim_at.load(Ordering::Relaxed);
        if at == 0 {
            return None;
        }
        let due = self.born + Duration::from_nanos(at);
        if Instant::now() < due {
            return Some(due);
        }
        let mut overflow = lock(&self.overflow);
        // Unless a burst cleared it (or another worker gave it back) since:
        // the overflow is empty from the refill that set it to the next
        // spill, which clears it.
        if self.sleep.trim_at.load(Ordering::Relaxed) == at {
            *overflow = VecDeque::new();
            self.sleep.trim_at.store(0, Ordering::Relaxed);
        }
        None
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
        let mut backoff = Backoff::new();
        loop {
            if let Some(message) = self.try_pop() {
                return Ok(message);
            }
            if self.is_closed() {
                // `close` holds the overflow lock while it sets the flag, so
                // nothing is pushed after it, and a pop waits for claimed
                // positions: one more look suffices.
                return self.try_pop().ok_or(Empty::Closed);
            }
            if !backoff.tired() {
                backoff.snooze();
                continue;
            }
            let until = [deadline, self.trim_if_idle()].into_iter().flatten().min();
            if !self.sleep_unless_ready(until) {
                // Something showed up but was gone (or is being written)
                // when looked for: look again, without sleeping.
                backoff.snooze();
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return self.try_pop().ok_or(Empty::Timeout);
            }
        }
    }

    /// Sleeps until woken (or until `until`) unless something is ready;
    /// false when it did not sleep.
    fn sleep_unless_ready(&self, until: Option<Instant>) -> bool {
        let mut sleep = lock(&self.sleep.lock);
        sleep.sleepers += 1;
        self.sleep.publish(&sleep);
        // Pairs with the fence in `wake_one`.
        sync::fence(Ordering::SeqCst);
        let sleeps = !self.ring.busy();
        if sleeps {
            sleep = match until {
                None => sync::wait(&self.sleep.cond, sleep),
                Some(until) => sync::wait_timeout(
                    &self.sleep.cond,
                    sleep,
                    until.saturating_duration_since(Instant::now()),
                ),
            };
            // A spurious or timed-out return consumes a wake-up too: at
            // worst a later push wakes a thread it need not have.
            sleep.woken = sleep.woken.saturating_sub(1);
        }
        sleep.sleepers -= 1;
        self.sleep.publish(&sleep);
        sleeps
    }

    /// Refuses further pushes and wakes every sleeper; what is queued can
    /// still be taken.
    pub(super) fn close(&self) {
        let overflow = lock(&self.overflow);
        self.ring.set(CLOSED);
        drop(overflow);
        drop(lock(&self.sleep.lock));
        self.sleep.cond.notify_all();
    }

    /// True once `close` was called.
    pub(super) fn is_closed(&self) -> bool {
        self.ring.flags() & CLOSED != 0
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
        // A burst's overflow memory goes back once it stayed empty a while,
        // given back by a worker about to sleep.
        let q: Queue<u32> = Queue::new();
        for i in 0..n {
            q.push(i, |i, _| i).unwrap();
        }
        while q.try_pop().is_some() {}
        q.push(0, |i, _| i).unwrap();
        assert_eq!(q.try_pop(), Some(0));
        assert_eq!(q.pop_timeout(Duration::from_millis(1)), Err(Empty::Timeout));
        assert!(lock(&q.overflow).capacity() > KEEP, "kept a while");
        let t = Instant::now();
        assert_eq!(
            q.pop_timeout(TRIM_AFTER + Duration::from_millis(30)),
            Err(Empty::Timeout)
        );
        assert!(t.elapsed() >= TRIM_AFTER);
        assert!(lock(&q.overflow).capacity() <= KEEP, "given back when idle");
        // A worker asleep when the time comes wakes to give it back.
        for i in 0..n {
            q.push(i, |i, _| i).unwrap();
        }
        while q.try_pop().is_some() {}
        assert!(lock(&q.overflow).capacity() > KEEP);
        let q = Arc::new(q);
        let sleeper = {
            let q = q.clone();
            std::thread::spawn(move || q.pop())
        };
        let give_up = Instant::now() + Duration::from_secs(20);
        while lock(&q.overflow).capacity() > KEEP {
            assert!(Instant::now() < give_up, "never given back");
            std::thread::sleep(Duration::from_millis(5));
        }
        q.close();
        assert_eq!(sleeper.join().unwrap(), None);
    }

    #[test]
    fn numbers_follow_the_queue_through_ring_and_overflow() {
        let q = Queue::new();
        let n = 5 * RING as u64;
        let mut expect = 0..;
        let mut check = |(i, number): (u64, u64)| {
            assert_eq!((i, number), (expect.next().unwrap(), i));
        };
        for i in 0..n {
            q.push(i, |i, number| (i, number)).unwrap();
        }
        for _ in 0..RING + 3 {
            check(q.try_pop().unwrap());
        }
        // Pushes while refills run, then after the overflow ran dry.
        for i in n..2 * n {
            q.push(i, |i, number| (i, number)).unwrap();
            if i % 3 == 0 {
                check(q.try_pop().unwrap());
            }
        }
        while let Some(m) = q.try_pop() {
            check(m);
        }
        for i in 2 * n..2 * n + 10 {
            q.push(i, |i, number| (i, number)).unwrap();
        }
        while let Some(m) = q.try_pop() {
            check(m);
        }
        assert_eq!(expect.next(), Some(2 * n + 10));
    }

    #[test]
    fn a_maker_that_panics_leaves_no_hole_to_wait_for() {
        let q = Queue::new();
        q.push(1u8, |i, _| i).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = q.push(2u8, |_, _| panic!("maker"));
        }));
        assert!(r.is_err());
        q.push(3u8, |i, _| i).unwrap();
        assert_eq!(
            (q.try_pop(), q.try_pop(), q.try_pop()),
            (Some(1), Some(3), None)
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
    /// preemptions cover the interleavings these races need, one where two
    /// workers may both spin on a claimed position (see `ring`'s models).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        model_at(2, f)
    }

    fn model_at(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(preemptions);
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
    fn loom_queue_a_burst_through_the_overflow_keeps_order() {
        // Three pushes into a ring of two: the third waits in the overflow
        // (or the ring, if the worker took one first), numbered all the same.
        model(|| {
            let q = Arc::new(Queue::new());
            let worker = {
                let q = q.clone();
                thread::spawn(move || (q.pop(), q.pop(), q.pop()))
            };
            for i in 0..3u64 {
                q.push(i, |i, number| (i, number)).unwrap();
            }
            assert_eq!(
                worker.join().unwrap(),
                (Some((0, 0)), Some((1, 1)), Some((2, 2)))
            );
        });
    }

    #[test]
    fn loom_queue_two_workers_one_wake_up_each() {
        model_at(1, || {
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
