//! Submitting: task records (signed, one nonce each) queued for the
//! dispatcher, and tasks sent again.

use super::*;

impl Shared {
    // -----------------------------------------------------------------------
    // Submitting.

    /// Queues calls of `callee`: as one task record with every item
    /// (`one_task`, a map chunk) or one record per item. A record's argument
    /// blob holds the callee's captures first (once), then its items.
    pub(crate) fn enqueue<Args: Payload, R: Payload>(
        self: &Arc<Self>,
        callee: &ship::Callee,
        batch: Vec<Args>,
        one_task: bool,
    ) -> Result<Vec<Future<R>>> {
        self.enqueue_with(callee, batch, one_task, &crate::CallOptions::default())
    }

    /// [`Shared::enqueue`] with per-call options: the lane (priority and
    /// resources) and the run-time limit.
    pub(crate) fn enqueue_with<Args: Payload, R: Payload>(
        self: &Arc<Self>,
        callee: &ship::Callee,
        batch: Vec<Args>,
        one_task: bool,
        options: &crate::CallOptions,
    ) -> Result<Vec<Future<R>>> {
        if lock(&self.state).closing {
            return Err(Error::Shutdown);
        }
        let needs = crate::cluster::lanes::canonical(&options.resources)?;
        let lane = crate::cluster::lanes::lane_of(&self.cfg.keys.queue(), options.priority, &needs);
        let limit_ms = options
            .timeout
            .map(|t| (t.as_millis() as u64).max(1))
            .unwrap_or(0);
        // The arguments' `Serialize` and `Drop` are user code: a panic there
        // is an error from `submit`, never an unwinding `submit`.
        let encoded = crate::panic::catch(move || {
            let mut encoded = Vec::with_capacity(batch.len());
            for args in &batch {
                let mut out = Vec::new();
                ship::encode(args, &mut out)?;
                encoded.push(out);
            }
            drop(batch);
            Ok::<_, Error>(encoded)
        })??;
        let groups: Vec<Vec<Vec<u8>>> = if one_task {
            vec![encoded]
        } else {
            encoded.into_iter().map(|e| vec![e]).collect()
        };
        let mut futures = Vec::new();
        let mut records = Vec::with_capacity(groups.len());
        for items in groups {
            if items.is_empty() {
                continue;
            }
            let size: u64 = items.iter().map(|i| i.len() as u64 + 4).sum();
            let largest = items.iter().map(Vec::len).max().unwrap_or(0) as u64;
            if size > self.bulk_limit || largest > u64::from(u32::MAX) {
                // Redis would refuse the value (and drop the connection, failing
                // every call sent with it): fail only these calls, at once.
                let error = Error::Codec {
                    type_name: std::any::type_name::<Args>().to_string(),
                    message: format!(
                        "the encoded arguments are {size} bytes, more than Redis accepts in \
                         one value (proto-max-bulk-len = {} bytes); pass less, or store \
                         large data elsewhere and pass its name",
                        self.bulk_limit
                    ),
                };
                for _ in 0..items.len() {
                    let (future, promise) = pair_in::<R>(self.owner);
                    promise.set_error(error.clone());
                    futures.push(future);
                }
                continue;
            }
            let promises: Vec<Promise<R>> = (0..items.len())
                .map(|_| {
                    let (future, promise) = pair_in::<R>(self.owner);
                    futures.push(future);
                    promise
                })
                .collect();
            records.push(self.record(callee, items, promises, (lane.clone(), limit_ms))?);
        }
        let st = lock(&self.state);
        if st.closing {
            // Dropping the promises fails the futures; report Shutdown.
            return Err(Error::Shutdown);
        }
        self.send_or_queue(st, records);
        Ok(futures)
    }

    /// Makes `records` in flight and sends them from this thread when they
    /// are few and small, nothing else is queued or being sent and no task
    /// is in flight (one thread hop less on an idle client; under load the
    /// dispatcher's batches are cheaper), else queues them for the
    /// dispatcher.
    fn send_or_queue(&self, mut st: MutexGuard<'_, State>, records: Vec<(Outgoing, Inflight)>) {
        let small = records.len() <= DIRECT_RECORDS
            && records.iter().map(|(o, _)| o.args.len()).sum::<usize>() <= DIRECT_BYTES;
        let direct = !records.is_empty()
            && small
            && !st.sending
            && !st.direct_off
            && st.outbox.is_empty()
            && st.cancels.is_empty()
            // With tasks in flight (a map's chunks, a loop of submits) the
            // dispatcher's batches are cheaper: sending each chunk from the
            // map's feeder cost a third of the map rate.
            && st.inflight.is_empty();
        let mut mine = Vec::new();
        for (out, inflight) in records {
            st.inflight.insert(out.seq, inflight);
            if direct {
                mine.push(out);
            } else {
                st.outbox.push(out);
            }
        }
        st.sending |= direct;
        drop(st);
        if direct {
            self.send_direct(mine);
        } else {
            self.work.notify_one();
        }
    }

    /// One task record for `items`, completing `promises` (one per item).
    fn record<R: Payload>(
        self: &Arc<Self>,
        callee: &ship::Callee,
        items: Vec<Vec<u8>>,
        promises: Vec<Promise<R>>,
        (lane, limit_ms): ((String, String), u64),
    ) -> Result<(Outgoing, Inflight)> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let task = protocol::task_id(&self.client_id, seq);
        let trampoline = callee.trampoline;
        let mut args = Vec::with_capacity(
            callee.captures().len() + 4 + items.iter().map(|i| i.len() + 4).sum::<usize>(),
        );
        protocol::push_item(&mut args, callee.captures());
        for item in &items {
            protocol::push_item(&mut args, item);
        }
        let n = items.len();
        let args = Arc::new(args);
        let outgoing = self.outgoing(
            seq,
            task,
            trampoline,
            args.clone(),
            n,
            (lane.clone(), limit_ms),
            self.nonce()?,
        );
        let mut deliveries: Vec<Option<Box<dyn Delivery>>> = Vec::with_capacity(n);
        for (idx, promise) in promises.into_iter().enumerate() {
            let weak = Arc::downgrade(self);
            let which = if n == 1 { -1 } else { idx as i64 };
            // A hook, not a done-callback: a done-callback would make the
            // client fetch a value that can stay in Redis.
            let cell = std::sync::Arc::downgrade(&promise.cell().0);
            promise.cell().on_final(Box::new(move || {
                let cancelled = cell
                    .upgrade()
                    .and_then(|c| c.cell().final_outcome())
                    .is_some_and(|o| matches!(o, Err(Error::Cancelled)));
                if cancelled {
                    request_cancel(&weak, seq, which);
                }
            }));
            deliveries.push(Some(Box::new(promise)));
        }
        Ok((
            outgoing,
            Inflight {
                items: deliveries,
                started: false,
                sent_at: None,
                cancelled: 0,
                trampoline,
                args,
                lane,
                limit_ms,
                entry: String::new(),
            },
        ))
    }

    /// A signed task record under `nonce` (see [`Nonces`]).
    #[allow(clippy::too_many_arguments)]
    fn outgoing(
        &self,
        seq: u64,
        task: String,
        trampoline: u64,
        args: Arc<Vec<u8>>,
        items: usize,
        (lane, limit_ms): ((String, String), u64),
        nonce: String,
    ) -> Outgoing {
        let signature = protocol::sign_task(
            self.cfg.secret.as_bytes(),
            &protocol::TaskSeal {
                namespace: &self.cfg.namespace,
                task: &task,
                nonce: &nonce,
                trampoline,
                build_id: &self.build_id,
                items: items as u64,
                args: &args,
            },
        );
        Outgoing {
            seq,
            task,
            trampoline,
            args,
            signature,
            items,
            nonce,
            lane,
            limit_ms,
            tried: false,
        }
    }

    /// Sends tasks again whose records vanished from Redis, each under a new
    /// sequence number (so nothing the server remembers of the old one, a
    /// finished bit or a late event, can get in the way). The client still
    /// delivers exactly one outcome per future; the call may run twice.
    pub(super) fn resubmit(&self, seqs: &[u64]) -> usize {
        let mut st = lock(&self.state);
        let mut sent = 0;
        let mut failed = Vec::new();
        for old in seqs {
            let Some(mut inflight) = st.inflight.remove(old) else {
                continue;
            };
            let nonce = match self.nonce() {
                Ok(n) => n,
                Err(e) => {
                    failed.extend(failing(vec![inflight], e));
                    continue;
                }
            };
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let task = protocol::task_id(&self.client_id, seq);
            let n = inflight.items.len();
            let out = self.outgoing(
                seq,
                task,
                inflight.trampoline,
                inflight.args.clone(),
                n,
                (inflight.lane.clone(), inflight.limit_ms),
                nonce,
            );
            inflight.sent_at = None;
            inflight.entry.clear();
            st.inflight.insert(seq, inflight);
            st.aliases.insert(*old, seq);
            st.outbox.push(out);
            sent += 1;
        }
        drop(st);
        self.courier.send_all(failed);
        self.work.notify_all();
        sent
    }

    /// A fresh task nonce (see [`Nonces`]).
    fn nonce(&self) -> Result<String> {
        lock(&self.nonces).next()
    }

    /// Queues one call launched from the waiting room, with its argument
    /// bytes already encoded; refusals complete `promise`.
    pub(crate) fn enqueue_ready<R: Payload>(
        self: &Arc<Self>,
        callee: &ship::Callee,
        args: Vec<u8>,
        promise: Promise<R>,
        options: &crate::CallOptions,
    ) {
        let lane = match crate::cluster::lanes::canonical(&options.resources) {
            Ok(needs) => {
                crate::cluster::lanes::lane_of(&self.cfg.keys.queue(), options.priority, &needs)
            }
            Err(e) => return promise.set_error(e),
        };
        let limit_ms = options
            .timeout
            .map(|t| (t.as_millis() as u64).max(1))
            .unwrap_or(0);
        let record = match self.record(callee, vec![args], vec![promise], (lane, limit_ms)) {
            Ok(r) => r,
            Err(e) => {
                // The promise was dropped with the record: its future is Broken.
                log::error!("could not make a task record: {e}");
                return;
            }
        };
        let mut st = lock(&self.state);
        if st.closing {
            drop(st);
            for d in record.1.items.into_iter().flatten() {
                d.fail(Error::Shutdown);
            }
            return;
        }
        st.inflight.insert(record.0.seq, record.1);
        st.outbox.push(record.0);
        drop(st);
        self.work.notify_one();
    }
}

fn request_cancel(shared: &Weak<Shared>, seq: u64, idx: i64) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    lock(&shared.state).cancels.push((seq, idx));
    shared.work.notify_one();
}

/// Task nonces: one read of the operating system's random source (12
/// bytes, no fallback) per `SUBMIT_BATCH` tasks — the most one `submit`
/// script call carries — each task's nonce that value and a counter.
/// Unique per task (task ids are too), and no nonce is guessable before
/// its batch's random value is drawn.
#[derive(Default)]
pub(super) struct Nonces {
    base: String,
    next: u64,
}

impl Nonces {
    pub(super) fn next(&mut self) -> Result<String> {
        if self.base.is_empty() || self.next >= protocol::SUBMIT_BATCH as u64 {
            self.base = ship::hex(&protocol::random_bytes::<12>()?);
            self.next = 0;
        }
        let n = self.next;
        self.next += 1;
        Ok(format!("{}-{n:x}", self.base))
    }
}
