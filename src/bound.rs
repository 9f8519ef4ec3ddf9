//! [`bind`]: closures that capture, on every backend.
//!
//! Rust cannot ship a closure's code to another process, but it can ship the
//! values the closure would have captured. `bind(captures, f)` pairs those
//! values (`C`, any [`Payload`]) with a function that does not capture
//! (`f: Fn(&C, A1, ..., An) -> R`, a fn item or a non-capturing closure).
//! The thread pool calls `f(&captures, args...)` in place; a process or
//! cluster worker receives `C` serialized beside the arguments — once per
//! frame, so a chunked `map` ships it once per chunk — rebuilds it, and
//! calls the same `f`, found by its trampoline like any shipped function.

use crate::ship::{self, Callee, Encoded};
use crate::{Payload, Result, Task};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Captured values paired with a function that takes them by reference: a
/// [`Task`] on every backend. Made by [`bind`].
///
/// Cloning a `Bound` is cheap (the captures sit behind an [`Arc`]), and its
/// clones share one encoding of the captures, made the first time one of
/// them is shipped.
///
/// ```
/// use fanout::{Executor, ThreadPool};
/// let offset = fanout::bind(10u64, |k: &u64, x: u64| x + k);
/// assert_eq!(*offset.captures(), 10);
/// let pool = ThreadPool::new(1)?;
/// assert_eq!(pool.submit(offset.clone(), (5,))?.result()?, 15);
/// assert_eq!(pool.submit(offset, (6,))?.result()?, 16);
/// # Ok::<(), fanout::Error>(())
/// ```
pub struct Bound<C, F> {
    inner: Arc<Inner<C>>,
    f: F,
}

struct Inner<C> {
    captures: C,
    /// The captures as a worker receives them, encoded on first use.
    encoded: OnceLock<Result<Arc<Encoded>>>,
}

/// Binds captured values to a function that takes them first, by
/// reference, giving a task that captures on every backend — Rust's answer
/// to shipping `lambda x: x * k` with cloudpickle.
///
/// `C` is any [`Payload`] that is `Clone + Sync` (plain data is); `f` is a
/// fn item or a closure that captures nothing, `Fn(&C, A1, ..., An) -> R`
/// with 0 to 8 further arguments. The result is a [`Task`] taking
/// `(A1, ..., An)`, so `submit`, `map`, `map_with` and `starmap` take it.
///
/// * Threads call `f(&captures, args...)` in place; nothing is serialized.
/// * Process and cluster workers receive `C` serialized beside the
///   arguments and call `f` on their own copy. In a chunked `map` the
///   captures travel once per chunk (once per call without chunking).
/// * `f` sees the captures read-only. Each worker has its own copy, so
///   interior mutability (a `Mutex` or an atomic inside `C`) is shared
///   between calls on the thread pool but not between processes.
///
/// Write the captures parameter's type (`|k: &u64, x: u64|`): without it
/// Rust infers a closure taking one particular reference rather than any
/// reference, and the call does not compile.
///
/// ```
/// use fanout::{bind, Executor, MapOptions, ThreadPool};
///
/// let pool = ThreadPool::new(2)?;
/// let k = 3u64;
/// assert_eq!(pool.submit(bind(k, |k: &u64, x: u64| x * k), (5,))?.result()?, 15);
///
/// let table = vec![10u64, 20, 30];
/// let looked_up: Vec<u64> = pool
///     .map_with(bind(table, |t: &Vec<u64>, i: usize| t[i]), [2, 0], MapOptions::default().chunksize(2))?
///     .collect::<Result<_, _>>()?;
/// assert_eq!(looked_up, [30, 10]);
/// # Ok::<(), fanout::Error>(())
/// ```
///
/// `f` itself must not capture: its captures could not be shipped, so this
/// does not compile (move `offset` into the captures instead).
///
/// ```compile_fail
/// let offset = 1u64;
/// let task = fanout::bind(2u64, move |k: &u64, x: u64| x * k + offset);
/// ```
///
/// Captures must be a [`Payload`]; a type without `Serialize` and
/// `Deserialize` is not:
///
/// ```compile_fail
/// #[derive(Clone)]
/// struct Settings { scale: u64 }
/// let task = fanout::bind(Settings { scale: 2 }, |s: &Settings, x: u64| x * s.scale);
/// ```
///
/// A bare capturing closure still does not compile on a process or cluster
/// backend — that is what `bind` is for:
///
/// ```compile_fail
/// use fanout::{Executor, ProcessPool};
/// let pool = ProcessPool::new(1).unwrap();
/// let k = 3u64;
/// let f = pool.submit(move |x: u64| x * k, (5,));
/// ```
pub fn bind<C, F>(captures: C, f: F) -> Bound<C, F>
where
    C: Payload + Clone + Sync,
    F: Copy + Send + Sync + 'static,
{
    const {
        assert!(
            ship::shippable::<F>(),
            "fanout::bind: the function must not capture anything (workers rebuild it from its \
             type alone); move what it captures into the captures argument (or the list of fanout::closure!)"
        )
    };
    Bound {
        inner: Arc::new(Inner {
            captures,
            encoded: OnceLock::new(),
        }),
        f,
    }
}

/// Writes the [`bind`] for a closure from its list of captured variables:
/// `closure!([k, table] |x: u64| table[x as usize] * k)` is
/// `bind((k, table), |(k, table): &(u64, Vec<u64>), x: u64| table[x as usize] * k)`.
///
/// The listed variables are moved into the captures (clone one first to
/// keep it); inside the body each is a reference to the copy the call
/// runs with (`&u64`, `&Vec<u64>`), since [`bind`] hands its function the
/// captures by reference. The arguments need their types written
/// (`|x: u64|`), and a return type, when given, needs a block body. A
/// `move` before the closure is accepted and changes nothing (the closure
/// is written `move`, so a variable missing from the list is captured by
/// value and refused by `bind` with a message saying so).
///
/// ```
/// use fanout::{closure, Executor, ProcessPool, ThreadPool};
///
/// let k = 3u64;
/// let table = vec![10u64, 20, 30];
/// let task = closure!([k, table] move |i: usize, plus: u64| table[i] * k + plus);
///
/// let threads = ThreadPool::new(2)?;
/// assert_eq!(threads.submit(task.clone(), (1, 4))?.result()?, 64);
/// let processes = ProcessPool::new(1)?;
/// assert_eq!(processes.submit(task, (2, 0))?.result()?, 90);
///
/// let name = String::from("fanout");
/// let shout = closure!([name] |times: usize| -> String { name.to_uppercase().repeat(times) });
/// assert_eq!(processes.submit(shout, (2,))?.result()?, "FANOUTFANOUT");
/// let table = vec![7u8; 3]; // `table` itself moved into `task` above
/// let len = closure!([table] || table.len());
/// assert_eq!(processes.submit(len, ())?.result()?, 3);
/// # Ok::<(), fanout::Error>(())
/// ```
///
/// A variable the body uses but the list leaves out would be captured by
/// the closure itself, which `bind` refuses at compile time:
///
/// ```compile_fail
/// let k = 3u64;
/// let offset = 1u64;
/// let task = fanout::closure!([k] |x: u64| x * k + offset);
/// ```
///
/// The argument types are written into a helper function, so they cannot
/// name a generic parameter of the function around the macro; use [`bind`]
/// there.
#[macro_export]
macro_rules! closure {
    ([$($cap:ident),* $(,)?] $(move)? || $body:expr) => {{
        fn __fanout_signature<C, R, F: Fn(&C) -> R>(_: &C, f: F) -> F {
            f
        }
        let captures = ($($cap,)*);
        let f = __fanout_signature(&captures, move |($($cap,)*): &_| $body);
        $crate::bind(captures, f)
    }};
    ([$($cap:ident),* $(,)?] $(move)? |$($arg:ident : $ty:ty),* $(,)?| -> $ret:ty { $($body:tt)* }) => {{
        fn __fanout_signature<C, F: Fn(&C, $($ty),*) -> $ret>(_: &C, f: F) -> F {
            f
        }
        let captures = ($($cap,)*);
        let f = __fanout_signature(&captures, move |($($cap,)*): &_, $($arg: $ty),*| -> $ret { $($body)* });
        $crate::bind(captures, f)
    }};
    ([$($cap:ident),* $(,)?] $(move)? |$($arg:ident : $ty:ty),* $(,)?| $body:expr) => {{
        fn __fanout_signature<C, R, F: Fn(&C, $($ty),*) -> R>(_: &C, f: F) -> F {
            f
        }
        let captures = ($($cap,)*);
        let f = __fanout_signature(&captures, move |($($cap,)*): &_, $($arg: $ty),*| $body);
        $crate::bind(captures, f)
    }};
}

impl<C, F> Bound<C, F> {
    /// The captured values.
    ///
    /// ```
    /// let b = fanout::bind(vec![1u8, 2], |v: &Vec<u8>, i: usize| v[i]);
    /// assert_eq!(b.captures(), &[1, 2]);
    /// ```
    pub fn captures(&self) -> &C {
        &self.inner.captures
    }
}

impl<C: Payload + Sync, F: Copy> Bound<C, F> {
    /// The callee a worker is sent: `trampoline` plus the shared encoding of
    /// the captures (made once for this `Bound` and all its clones).
    fn callee(&self, trampoline: u64) -> Result<Callee> {
        let captures = self
            .inner
            .encoded
            .get_or_init(|| ship::encode_captures(&self.inner.captures))
            .clone()?;
        Ok(Callee {
            trampoline,
            captures,
        })
    }
}

impl<C, F: Copy> Clone for Bound<C, F> {
    fn clone(&self) -> Self {
        Bound {
            inner: self.inner.clone(),
            f: self.f,
        }
    }
}

impl<C: fmt::Debug, F> fmt::Debug for Bound<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound")
            .field("captures", &self.inner.captures)
            .field("f", &std::any::type_name::<F>())
            .finish()
    }
}

macro_rules! impl_bound_task {
    ($($arg:ident),*) => {
        impl<C, F, R, $($arg,)*> Task<($($arg,)*)> for Bound<C, F>
        where
            C: Payload + Clone + Sync,
            F: Fn(&C, $($arg),*) -> R + Copy + Send + Sync + 'static,
        {
            type Output = R;

            #[allow(non_snake_case, clippy::unused_unit)]
            #[inline]
            fn call(self, ($($arg,)*): ($($arg,)*)) -> R {
                (self.f)(&self.inner.captures, $($arg),*)
            }

            fn __callee(&self) -> Result<Callee>
            where
                ($($arg,)*): Payload,
                R: Payload,
            {
                self.callee(ship::bound_trampoline_of::<C, F, ($($arg,)*)>())
            }
        }
    };
}

impl_bound_task!();
impl_bound_task!(A1);
impl_bound_task!(A1, A2);
impl_bound_task!(A1, A2, A3);
impl_bound_task!(A1, A2, A3, A4);
impl_bound_task!(A1, A2, A3, A4, A5);
impl_bound_task!(A1, A2, A3, A4, A5, A6);
impl_bound_task!(A1, A2, A3, A4, A5, A6, A7);
impl_bound_task!(A1, A2, A3, A4, A5, A6, A7, A8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_encoding() {
        let b = bind(vec![1u32, 2, 3], |v: &Vec<u32>, i: usize| v[i]);
        let c = b.clone();
        let x = Task::<(usize,)>::__callee(&b).unwrap();
        let y = Task::<(usize,)>::__callee(&c).unwrap();
        assert!(Arc::ptr_eq(&x.captures, &y.captures));
        assert_eq!(x.trampoline, y.trampoline);
        assert_eq!(
            x.captures(),
            postcard::to_allocvec(&vec![1u32, 2, 3]).unwrap()
        );
        assert_eq!(Task::call(c, (2,)), 3);
    }

    #[test]
    fn a_panicking_serialize_is_a_codec_error() {
        #[derive(Clone, serde::Deserialize)]
        struct Bad;
        impl serde::Serialize for Bad {
            fn serialize<S: serde::Serializer>(
                &self,
                _: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                panic!("no serializing today")
            }
        }
        let b = bind(Bad, |_: &Bad, x: u8| x);
        let err = Task::<(u8,)>::__callee(&b).unwrap_err();
        assert!(matches!(err, crate::Error::Codec { .. }), "{err:?}");
        assert!(err.to_string().contains("no serializing today"), "{err}");
    }
}
