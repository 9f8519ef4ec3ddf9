//! Finishes of short quick tasks as one transaction of plain commands.
//!
//! A script call costs Redis several times as much when Redis sleeps
//! between calls, as it does on a round trip, as in a hot loop; the
//! `finish_claim` call an idle slot sent after each task was most of
//! Redis's time in a round trip (BENCHMARKS.md, ninth round). So an idle
//! slot sends the finishes of quick tasks that ended before their mark was
//! due (see `starter`) as `MULTI`, `XACK` of their entries, `SETBIT` of
//! their bits in their client's bitmap with its expiry, `DEL` of their
//! records, an `XADD NOMKSTREAM` of each "done" event with the result in
//! it, `EXEC`, pipelined with the slot's next blocking read.
//!
//! Why that is as safe as the script (see `lua/finish_fn.lua`):
//! * **The record is not read.** Such a task's record is as `submit` wrote
//!   it: the slot's read was its start, `cancel` never cancels a delivered
//!   quick task, and nobody else starts it while its lease runs. Only a
//!   worker that stalled past the lease could find another running it;
//!   then both finishes set the same bit and the client takes the first
//!   "done" event and ignores the second (it delivers each task once), as
//!   it would after the script, which drops the second.
//! * **The client's liveness is the cached one** (`LiveCache`): the slot
//!   trusted it for the start, and the bitmap gets the liveness value's
//!   signed expiry, set only if the bitmap has none (`NX`: the first bit)
//!   or extended (`GT`), never shortened. The keeper refreshes the liveness
//!   and the bitmap together, so this is the expiry the script would have
//!   read from the event stream. A client that is gone has no event
//!   stream, and `NOMKSTREAM` adds no event to one.
//! * **The results are small** (at most 4 KiB, in the event) and have a
//!   bit, so no result key is written, as in the script.
//! * **The queue is not trimmed** here: a transaction cannot ask what is
//!   still pending. The slot owes a tidy ([`Debt`]): every
//!   [`TIDY_EVERY`]th finish goes as the script again, which trims exactly,
//!   and a slot that finds nothing to read, leaves or stops reads with the
//!   `tidy` script (`lua/tidy.lua`). So at most that many done entries per
//!   slot wait in the queue, for at most one blocking read.
//!
//! `PEXPIREAT` takes `NX` and `GT` from Redis 7.0; against an older server
//! the script does every finish.

use super::batch::Finished;
use super::protocol::{self, ScriptName, Scripts};

/// The most results an idle slot sends as plain finishes before its next
/// finish goes as the script (which trims the queue).
pub(super) const TIDY_EVERY: u32 = 32;

/// The largest result that rides in its "done" event (as `finish_fn.lua`).
pub(super) const INLINE_RESULT: usize = 4096;

/// What a slot owes the queue: done entries it acknowledged without a trim.
#[derive(Default, Debug)]
pub(super) struct Debt {
    newest: Option<String>,
    count: u32,
}

impl Debt {
    /// `entry` was acknowledged by a plain finish.
    pub(super) fn owe(&mut self, entry: &str) {
        self.newest = Some(entry.to_string());
        self.count += 1;
    }

    /// True when the next finish should go as the script, which trims.
    pub(super) fn due(&self) -> bool {
        self.count >= TIDY_EVERY
    }

    /// The script tidied (or is about to): nothing is owed.
    pub(super) fn paid(&mut self) {
        self.newest = None;
        self.count = 0;
    }

    /// The `tidy` call that pays the debt, if anything is owed.
    pub(super) fn take(&mut self, scripts: &Scripts, queue: &str) -> Option<redis::Cmd> {
        let newest = self.newest.take()?;
        self.count = 0;
        let mut cmd = scripts.call(ScriptName::Tidy, &[queue]);
        cmd.arg(protocol::GROUP).arg(newest);
        Some(cmd)
    }
}

/// True when every finish in `batch` may go plain: a quick task of the
/// default lane `queue` that ended unmarked, of the client whose liveness
/// is cached (its event stream `events`), with a small result and a bit.
pub(super) fn qualifies(batch: &[Finished], queue: &str, events: &str) -> bool {
    !batch.is_empty()
        && batch.iter().all(|f| {
            f.unmarked
                && f.stream == queue
                && f.events == events
                && f.bit >= 0
                && !f.lazy
                && !f.envelope.is_empty()
                && f.envelope.len() <= INLINE_RESULT
        })
}

/// The expiry (ms, Redis time) in a signed liveness value (`expiry:mac`).
pub(super) fn expiry_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()?
        .split_once(':')?
        .0
        .parse()
        .ok()
}

/// The transaction for `batch` (see [`qualifies`]) of `queue`, the bitmap
/// expiring at `expires_ms` (Redis time) or later: `MULTI` … `EXEC`, in
/// order, each a reply of its own. The "done" events go to `pushed` when
/// the results were pushed to their client (see `push`: it catches up
/// from there, and is not woken), else to its event stream.
pub(super) fn commands(
    batch: &[Finished],
    queue: &str,
    expires_ms: u64,
    pushed: Option<&str>,
) -> Vec<redis::Cmd> {
    let mut cmds = Vec::with_capacity(6 + 2 * batch.len());
    cmds.push(redis::cmd("MULTI"));
    let mut ack = redis::cmd("XACK");
    ack.arg(queue).arg(protocol::GROUP);
    for f in batch {
        ack.arg(&f.entry);
    }
    cmds.push(ack);
    for f in batch {
        let mut c = redis::cmd("SETBIT");
        c.arg(&f.finished).arg(f.bit).arg(1);
        cmds.push(c);
    }
    // One client per batch (one cached liveness), so one bitmap.
    for option in ["NX", "GT"] {
        let mut c = redis::cmd("PEXPIREAT");
        c.arg(&batch[0].finished).arg(expires_ms).arg(option);
        cmds.push(c);
    }
    let mut del = redis::cmd("DEL");
    for f in batch {
        del.arg(&f.task_key);
    }
    cmds.push(del);
    for f in batch {
        let mut c = redis::cmd("XADD");
        c.arg(pushed.unwrap_or(&f.events))
            .arg("NOMKSTREAM")
            .arg("*")
            .arg("k")
            .arg("d")
            .arg("t")
            .arg(&f.task)
            .arg("z")
            .arg(f.envelope.len())
            .arg("l")
            .arg("0")
            .arg("v")
            .arg(&f.envelope);
        cmds.push(c);
    }
    cmds.push(redis::cmd("EXEC"));
    cmds
}

/// The finishes of `batch` whose "done" event the transaction could not
/// add (its client's event stream, or pushed-event stream, was gone: `XADD NOMKSTREAM` replied nil)
/// although it set their bits (`SETBIT` replied 0), from `EXEC`'s reply
/// to [`commands`]. Their bits must be cleared again ([`clear`]): a set
/// bit tells the client's probe that the result is on its way, so it
/// would never send such a task again. (The script sets no bit then.)
pub(super) fn undelivered<'a>(batch: &'a [Finished], exec: &redis::Value) -> Vec<&'a Finished> {
    let Some(items) = protocol::array(exec) else {
        return Vec::new();
    };
    let k = batch.len();
    batch
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let set_now = items.get(1 + i).and_then(protocol::int) == Some(0);
            let no_event = matches!(items.get(4 + k + i), Some(redis::Value::Nil));
            set_now && no_event
        })
        .map(|(_, f)| f)
        .collect()
}

/// Clears the bits of `lost` (see [`undelivered`]).
pub(super) fn clear(lost: &[&Finished]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for f in lost {
        pipe.cmd("SETBIT")
            .arg(&f.finished)
            .arg(f.bit)
            .arg(0)
            .ignore();
    }
    pipe
}

/// After plain finishes of `batch` whose replies were lost: clears the
/// bits of those whose client's event stream is gone (`lua/unfinish.lua`).
pub(super) fn unfinish(scripts: &Scripts, batch: &[Finished]) -> redis::Cmd {
    let mut keys = Vec::with_capacity(2 * batch.len());
    for f in batch {
        keys.push(f.events.as_str());
        keys.push(f.finished.as_str());
    }
    let mut cmd = scripts.call(ScriptName::Unfinish, &keys);
    for f in batch {
        cmd.arg(f.bit);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(unmarked: bool, size: usize) -> Finished {
        let keys = protocol::Keys::new("ns");
        let mut f = Finished::new(
            &keys,
            &keys.queue(),
            "1-1",
            "c1-2",
            ("c1", 2),
            vec![7; size],
            false,
        );
        f.unmarked = unmarked;
        f
    }

    #[test]
    fn only_unmarked_small_finishes_of_the_cached_client_go_plain() {
        let keys = protocol::Keys::new("ns");
        let (q, ev) = (keys.queue(), keys.events("c1"));
        assert!(qualifies(&[finished(true, 10)], &q, &ev));
        assert!(qualifies(&[finished(true, INLINE_RESULT)], &q, &ev));
        assert!(!qualifies(&[], &q, &ev));
        assert!(!qualifies(&[finished(false, 10)], &q, &ev), "marked");
        assert!(!qualifies(&[finished(true, INLINE_RESULT + 1)], &q, &ev));
        assert!(!qualifies(&[finished(true, 0)], &q, &ev));
        assert!(!qualifies(&[finished(true, 10)], &q, &keys.events("c2")));
        assert!(!qualifies(&[finished(true, 10)], "{ns}:other", &ev));
        let mut lazy = finished(true, 10);
        lazy.lazy = true;
        assert!(!qualifies(&[lazy], &q, &ev));
        let mut big_seq = finished(true, 10);
        big_seq.bit = -1;
        assert!(!qualifies(&[finished(true, 10), big_seq], &q, &ev));
    }

    #[test]
    fn a_bit_set_without_its_event_is_found_in_the_reply() {
        use redis::Value::{Array, BulkString, Int, Nil};
        let batch = [finished(true, 3), finished(true, 3), finished(true, 3)];
        // XACK, 3 SETBITs (the second bit was set before), 2 PEXPIREATs,
        // DEL, 3 XADDs (the first and second added nothing).
        let exec = Array(vec![
            Int(3),
            Int(0),
            Int(1),
            Int(0),
            Int(1),
            Int(0),
            Int(3),
            Nil,
            Nil,
            BulkString(b"1-2".to_vec()),
        ]);
        let lost = undelivered(&batch, &exec);
        assert_eq!(lost.len(), 1);
        assert!(std::ptr::eq(lost[0], &batch[0]));
        assert!(undelivered(&batch, &Nil).is_empty());
        assert_eq!(clear(&lost).cmd_iter().count(), 1);
    }

    #[test]
    fn a_liveness_value_names_its_expiry() {
        assert_eq!(expiry_of(b"1700000000123:abcdef"), Some(1_700_000_000_123));
        assert_eq!(expiry_of(b"junk"), None);
        assert_eq!(expiry_of(b"x:y"), None);
        assert_eq!(expiry_of(&[0xff, b':']), None);
    }

    #[test]
    fn the_debt_is_due_every_so_many_finishes_and_paid_once() {
        let scripts = Scripts::new();
        let mut d = Debt::default();
        assert!(d.take(&scripts, "q").is_none(), "nothing owed");
        for i in 0..TIDY_EVERY {
            assert!(!d.due());
            d.owe(&format!("1-{i}"));
        }
        assert!(d.due());
        let cmd = d.take(&scripts, "q").expect("owed");
        let packed = String::from_utf8_lossy(&cmd.get_packed_command()).into_owned();
        assert!(
            packed.contains(&format!("1-{}", TIDY_EVERY - 1)),
            "{packed}"
        );
        assert!(!d.due());
        assert!(d.take(&scripts, "q").is_none(), "paid");
        d.owe("2-0");
        d.paid();
        assert!(d.take(&scripts, "q").is_none());
    }

    #[test]
    fn the_transaction_acks_sets_bits_deletes_records_and_tells_the_client() {
        let batch = [finished(true, 3)];
        let cmds = commands(&batch, "{ns}:q", 42, None);
        let names: Vec<String> = cmds
            .iter()
            .map(|c| {
                let p = c.get_packed_command();
                let text = String::from_utf8_lossy(&p).into_owned();
                text.split("\r\n").nth(2).unwrap_or("").to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "MULTI",
                "XACK",
                "SETBIT",
                "PEXPIREAT",
                "PEXPIREAT",
                "DEL",
                "XADD",
                "EXEC"
            ]
        );
        let to = |cmds: &[redis::Cmd]| {
            let p = cmds[cmds.len() - 2].get_packed_command();
            String::from_utf8_lossy(&p).into_owned()
        };
        assert!(to(&cmds).contains("{ns}:ev:c1"), "{}", to(&cmds));
        let pushed = commands(&batch, "{ns}:q", 42, Some("{ns}:pev:c1"));
        assert!(to(&pushed).contains("{ns}:pev:c1"), "{}", to(&pushed));
        assert!(!to(&pushed).contains("{ns}:ev:c1"));
    }
}
