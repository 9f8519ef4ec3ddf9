//! The thread pool's ring: a bounded multi-producer multi-consumer queue of
//! stamped slots (Dmitry Vyukov's design), whose tail word also carries
//! the queue's two flags, so that one compare-and-swap both claims a slot
//! and checks that the queue is neither closed nor spilled.
//!
//! A slot's stamp says whose turn it is: `pos` when it is free for the push
//! of position `pos`, `pos + 1` once that push wrote it, `pos + capacity`
//! once it was read (free for the next lap). A push claims a position by
//! moving the tail past it, then writes; a pop claims one by moving the
//! head past it, then reads. Between the claim and the write a position is
//! *claimed*: it counts as queued (it is between head and tail), and a pop
//! that reaches it waits the few instructions until it is written.
//!
//! Why the flags live in the tail: a push must be atomic with `close` (a
//! call is queued before `close` returns, or refused whole) and must not
//! overtake the overflow (a call never overtakes one its own thread queued
//! before it). With both flags in the word the push moves, a push that
//! succeeded saw neither flag, and one that fails saw the flag that was
//! set: one locked instruction per push while the ring has room, where
//! taking and releasing the overflow's lock around a push into crossbeam's
//! ring was three (BENCHMARKS.md, fourteenth round). A push that finds the
//! ring full still goes to the overflow, under its lock. Unlike
//! crossbeam's, this ring is built on `crate::sync`, so the loom models
//! check it too.

use crate::sync::{AtomicUsize, Ordering, UnsafeCell};
use std::mem::MaybeUninit;

/// Set by `close`: pushes are refused.
pub(super) const CLOSED: usize = 1;
/// Set while the overflow holds calls: pushes go there.
pub(super) const SPILLED: usize = 2;
const FLAGS: usize = CLOSED | SPILLED;
/// The tail word counts positions in units of this (the flags below it).
const ONE: usize = 4;

/// A value alone on its cache line (two lines: adjacent-line prefetch).
#[derive(Default)]
#[repr(align(128))]
pub(super) struct Padded<T>(pub(super) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Slot<M> {
    stamp: AtomicUsize,
    /// `None` stands for a push whose message could not be made (its
    /// maker panicked after the claim): pops skip it.
    value: UnsafeCell<MaybeUninit<Option<M>>>,
}

/// What [`Ring::claim`] found instead of a free position.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The flag named is set (and the claim was not told to ignore it).
    Flag(usize),
    /// Every slot is taken.
    Full,
}

/// Written by pushes (`tail`), by pops (`head`), read by both (`slots`).
pub(super) struct Ring<M> {
    tail: Padded<AtomicUsize>,
    head: Padded<AtomicUsize>,
    slots: Box<[Slot<M>]>,
}

// A message is moved in by one thread and out by another, once each.
unsafe impl<M: Send> Send for Ring<M> {}
unsafe impl<M: Send> Sync for Ring<M> {}

/// The signed distance from `b` to `a` on positions that may wrap.
fn ahead(a: usize, b: usize) -> isize {
    a.wrapping_sub(b) as isize
}

impl<M> Ring<M> {
    /// A ring of `capacity` slots: a power of two (a position's slot is
    /// then a mask, not a division: two `div`s were 4 % of a push), at
    /// least 2 (one slot's stamps could not tell a written slot from a free
    /// one of the next lap).
    pub(super) fn new(capacity: usize) -> Self {
        assert!(
            capacity >= 2 && capacity.is_power_of_two(),
            "a ring needs a power of two slots, two or more"
        );
        Ring {
            tail: Padded(AtomicUsize::new(0)),
            head: Padded(AtomicUsize::new(0)),
            slots: (0..capacity)
                .map(|i| Slot {
                    stamp: AtomicUsize::new(i),
                    value: UnsafeCell::new(MaybeUninit::uninit()),
                })
                .collect(),
        }
    }

    fn slot(&self, pos: usize) -> &Slot<M> {
        &self.slots[pos & (self.slots.len() - 1)]
    }

    /// Claims the next position unless a flag outside `ignore` is set or
    /// the ring is full. The claimed position must be [`Ring::write`]n.
    pub(super) fn claim(&self, ignore: usize) -> Result<usize, Refused> {
        let mut backoff = Backoff::new();
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let set = tail & FLAGS & !ignore;
            if set != 0 {
                return Err(Refused::Flag(set));
            }
            let pos = tail / ONE;
            let stamp = self.slot(pos).stamp.load(Ordering::Acquire);
            match ahead(stamp, pos) {
                0 => match self.tail.compare_exchange_weak(
                    tail,
                    tail + ONE,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(pos),
                    Err(now) => tail = now,
                },
                // The slot still holds (or is being read of) the last lap.
                d if d < 0 => return Err(Refused::Full),
                // Another push claimed `pos` since the tail was read.
                _ => {
                    backoff.snooze();
                    tail = self.tail.load(Ordering::Relaxed);
                }
            }
        }
    }

    /// Writes a claimed position (`None`: nothing to run there).
    pub(super) fn write(&self, pos: usize, message: Option<M>) {
        let slot = self.slot(pos);
        // SAFETY: the claim made this thread the slot's only writer, and no
        // pop reads it before the stamp below says it is written.
        slot.value.with_mut(|v| unsafe { (*v).write(message) });
        slot.stamp.store(pos.wrapping_add(1), Ordering::Release);
    }

    /// Takes the oldest message, waiting for a claimed one to be written;
    /// `None` when nothing is queued.
    pub(super) fn pop(&self) -> Option<M> {
        let mut backoff = Backoff::new();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(head);
            let stamp = stamp(&slot.stamp, backoff.waited());
            match ahead(stamp, head.wrapping_add(1)) {
                0 => match self.head.compare_exchange_weak(
                    head,
                    head.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the stamp says the push wrote the slot
                        // (acquired above), and moving the head made this
                        // thread its only reader.
                        let message = slot.value.with(|v| unsafe { (*v).assume_init_read() });
                        slot.stamp
                            .store(head.wrapping_add(self.slots.len()), Ordering::Release);
                        match message {
                            Some(message) => return Some(message),
                            None => head = self.head.load(Ordering::Relaxed),
                        }
                    }
                    Err(now) => head = now,
                },
                d if d < 0 => {
                    if ahead(self.tail.load(Ordering::SeqCst) / ONE, head) <= 0 {
                        return None;
                    }
                    // Claimed, not written yet: its push is a few
                    // instructions from done (or was preempted).
                    backoff.snooze();
                    head = self.head.load(Ordering::Relaxed);
                }
                // Another pop took `head` since it was read.
                _ => {
                    backoff.snooze();
                    head = self.head.load(Ordering::Relaxed);
                }
            }
        }
    }

    /// The tail word's flags.
    pub(super) fn flags(&self) -> usize {
        self.tail.load(Ordering::SeqCst) & FLAGS
    }

    /// The position the next claim gets (stable only while nothing can
    /// claim: with `SPILLED` set, under the overflow's lock).
    pub(super) fn next(&self) -> usize {
        self.tail.load(Ordering::Relaxed) / ONE
    }

    /// Sets `flag` and returns the position the next claim gets.
    pub(super) fn set(&self, flag: usize) -> usize {
        self.tail.fetch_or(flag, Ordering::SeqCst) / ONE
    }

    /// Clears `flag`.
    pub(super) fn clear(&self, flag: usize) {
        self.tail.fetch_and(!flag, Ordering::SeqCst);
    }

    /// Positions queued (claimed or written, not taken); exact only when
    /// nothing moves.
    pub(super) fn len(&self) -> usize {
        let tail = self.tail.load(Ordering::SeqCst) / ONE;
        let head = self.head.load(Ordering::SeqCst);
        ahead(tail, head).max(0) as usize
    }

    /// True when something is queued or a flag is set: what a worker
    /// checks before it sleeps.
    pub(super) fn busy(&self) -> bool {
        let tail = self.tail.load(Ordering::SeqCst);
        tail & FLAGS != 0 || ahead(tail / ONE, self.head.load(Ordering::SeqCst)) > 0
    }
}

/// Loads a slot's stamp; `waited`: again, after a [`Backoff::snooze`].
/// Under loom that second load is a read-modify-write: a plain load there
/// may keep returning a value the thread already saw (so a pop that waits
/// for a claimed slot would wait forever in the model, not on hardware),
/// and an RMW always reads the latest value.
fn stamp(a: &AtomicUsize, waited: bool) -> usize {
    #[cfg(loom)]
    if waited {
        return a.fetch_add(0, Ordering::Acquire);
    }
    #[cfg(not(loom))]
    let _ = waited;
    a.load(Ordering::Acquire)
}

/// Spins (`1 << step` pause instructions) while `step` is below this, then
/// yields.
#[cfg(not(loom))]
const SPINS: u32 = 6;

/// Waiting a little longer each time: the ring's pops and claims when
/// another thread is mid-way, and a worker before it sleeps.
pub(super) struct Backoff {
    step: u32,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff { step: 0 }
    }

    /// Waits one step: `1 << step` pauses, then a yield per step (the
    /// thread waited for may be on this very core). Under loom, loom's
    /// yield, which a spin loop needs for the model to progress.
    pub(super) fn snooze(&mut self) {
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        if self.step < SPINS {
            for _ in 0..1u32 << self.step {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
        self.step = self.step.saturating_add(1);
    }

    /// Whether a worker should sleep rather than snooze again: after the
    /// spins and one yield. (crossbeam yields four times; on two cores,
    /// with the submitter a third thread, one yield measured best: 2M
    /// submits 0.60 s against 0.72 s with four, 0.90 s with none, context
    /// switches 9k against 57k and 94k; BENCHMARKS.md.) Under loom at once:
    /// what the models check is the sleeping and waking, and spinning would
    /// only multiply states.
    pub(super) fn tired(&self) -> bool {
        #[cfg(loom)]
        return true;
        #[cfg(not(loom))]
        return self.step > SPINS;
    }

    fn waited(&self) -> bool {
        self.step > 0
    }
}

impl<M> Drop for Ring<M> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_full_flags_and_skipped_positions() {
        let r = Ring::new(4);
        for i in 0..4 {
            let pos = r.claim(0).unwrap();
            assert_eq!(pos, i);
            r.write(pos, Some(i));
        }
        assert_eq!(r.claim(0), Err(Refused::Full));
        assert_eq!(r.len(), 4);
        assert_eq!(r.pop(), Some(0));
        assert_eq!(r.set(SPILLED), 4);
        assert_eq!(r.claim(0), Err(Refused::Flag(SPILLED)));
        // A holder of the overflow's lock may claim past the flag.
        let pos = r.claim(SPILLED).unwrap();
        r.write(pos, None);
        r.clear(SPILLED);
        r.set(CLOSED);
        assert_eq!(r.claim(0), Err(Refused::Flag(CLOSED)));
        assert_eq!(r.flags(), CLOSED);
        // The position written as `None` is skipped.
        let rest: Vec<usize> = std::iter::from_fn(|| r.pop()).collect();
        assert_eq!(rest, vec![1, 2, 3]);
        assert!(r.busy(), "closed counts as busy");
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn values_left_in_a_dropped_ring_are_dropped() {
        let value = Arc::new(());
        let r = Ring::new(8);
        for _ in 0..5 {
            let pos = r.claim(0).unwrap();
            r.write(pos, Some(value.clone()));
        }
        drop(r.pop());
        drop(r);
        assert_eq!(Arc::strong_count(&value), 1);
    }

    #[test]
    fn many_pushers_and_poppers_lose_and_repeat_nothing() {
        let r = Arc::new(Ring::new(64));
        let per = 20_000usize;
        let pushers: Vec<_> = (0..3)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        loop {
                            match r.claim(0) {
                                Ok(pos) => break r.write(pos, Some(t * per + i)),
                                Err(_) => std::thread::yield_now(),
                            }
                        }
                    }
                })
            })
            .collect();
        let poppers: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let (mut got, give_up) = (
                        Vec::new(),
                        std::time::Instant::now() + std::time::Duration::from_secs(60),
                    );
                    while r.flags() & CLOSED == 0 || r.len() > 0 {
                        assert!(std::time::Instant::now() < give_up, "popper stuck");
                        match r.pop() {
                            Some(v) => got.push(v),
                            None => std::thread::yield_now(),
                        }
                    }
                    got
                })
            })
            .collect();
        for p in pushers {
            p.join().unwrap();
        }
        r.set(CLOSED);
        let mut got: Vec<usize> = poppers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..3 * per).collect::<Vec<_>>());
    }
}

/// Loom models of the ring alone (run by `scripts/test.sh` with `--cfg
/// loom`). Pops that wait for a claimed position spin (with loom's yield);
/// with two spinning threads loom 0.7 did not finish exploring at two
/// preemptions (it reports "exceeded maximum number of branches", even
/// with 200,000 allowed: a pop keeps waiting on a claimed slot in a
/// schedule where the claiming push never runs again), so models with two
/// pops or two pushes racing run at one. For the same reason the queue's
/// close race, which passes at two, does not finish at three. On hardware
/// the claiming push runs on; crossbeam's ring has the same window.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(preemptions);
        builder.check(f);
    }

    fn take(r: &Ring<u8>) -> u8 {
        loop {
            match r.pop() {
                Some(v) => return v,
                None => thread::yield_now(),
            }
        }
    }

    #[test]
    fn loom_ring_a_pop_sees_each_write_in_order() {
        model(2, || {
            let r = Arc::new(Ring::new(2));
            let popper = {
                let r = r.clone();
                thread::spawn(move || (take(&r), take(&r), take(&r)))
            };
            for i in 0..3u8 {
                let pos = loop {
                    match r.claim(0) {
                        Ok(pos) => break pos,
                        Err(_) => thread::yield_now(),
                    }
                };
                r.write(pos, Some(i));
            }
            assert_eq!(popper.join().unwrap(), (0, 1, 2));
        });
    }

    #[test]
    fn loom_ring_two_pops_take_each_message_once() {
        model(1, || {
            let r = Arc::new(Ring::new(2));
            let poppers: Vec<_> = (0..2)
                .map(|_| {
                    let r = r.clone();
                    thread::spawn(move || take(&r))
                })
                .collect();
            for i in 0..2u8 {
                let pos = r.claim(0).unwrap();
                r.write(pos, Some(i));
            }
            let mut got: Vec<u8> = poppers.into_iter().map(|p| p.join().unwrap()).collect();
            got.sort_unstable();
            assert_eq!(got, vec![0, 1]);
        });
    }

    #[test]
    fn loom_ring_two_pushes_and_a_flag() {
        model(1, || {
            let r = Arc::new(Ring::new(2));
            let pushers: Vec<_> = (0..2u8)
                .map(|i| {
                    let r = r.clone();
                    thread::spawn(move || match r.claim(0) {
                        Ok(pos) => {
                            r.write(pos, Some(i));
                            true
                        }
                        Err(_) => false,
                    })
                })
                .collect();
            r.set(CLOSED);
            let pushed = pushers
                .into_iter()
                .map(|p| p.join().unwrap())
                .filter(|&ok| ok)
                .count();
            let mut taken = 0;
            while r.pop().is_some() {
                taken += 1;
            }
            assert_eq!(taken, pushed);
        });
    }
}
