//! What can be submitted: [`Task`] (a callable that can be cloned and
//! shipped) and [`Payload`] (a value that can cross a process or host
//! boundary).

/// A value that can be sent to another thread, process or host.
///
/// Blanket-implemented for every `Serialize + DeserializeOwned + Send + 'static`
/// type, so it never needs to be implemented by hand.
///
/// ```
/// fn takes_payload<P: fanout::Payload>(_: P) {}
/// takes_payload((1u32, String::from("x"), vec![1.5f64]));
/// ```
pub trait Payload: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}
impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Payload for T {}

/// A callable that can be shipped to a worker: a function item, a closure,
/// or a [`bind`](crate::bind) of captured values and a function, called with
/// its arguments as a tuple `Args = (A1, ..., An)`.
///
/// Implemented for every `F: Fn(A1, ..., An) -> R + Copy + Send + Sync + 'static`
/// with 0 to 8 arguments, and for [`Bound`](crate::Bound). Function items,
/// non-capturing closures and `Bound` work on every backend; a closure that
/// captures works on the thread pool only (a process or cluster backend
/// rejects it at compile time — use `bind` there).
///
/// `Task` asks for `Clone`, not `Copy`, because a `Bound` holds its captures
/// (behind an `Arc`, so a clone is a reference count, not a deep copy).
///
/// ```
/// use fanout::Task;
///
/// fn add(a: i32, b: i32) -> i32 { a + b }
/// fn answer() -> i32 { 42 }
///
/// assert_eq!(Task::call(add, (1, 2)), 3);
/// assert_eq!(Task::call(answer, ()), 42);
/// assert_eq!(Task::call(|x: i32| x * x, (5,)), 25);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a task taking the arguments `{Args}`",
    label = "not a task for these arguments",
    note = "a task is a fn item or a closure taking the arguments one by one (`|a: u64, b: u64| ..`), \
            or `fanout::bind(captures, |c: &C, a: u64| ..)`; in a `bind`, write the type of the \
            captures parameter (`&C`), or Rust cannot tell the closure takes a reference"
)]
pub trait Task<Args>: Clone + Send + Sync + 'static {
    /// What the call returns.
    type Output;

    /// Calls the function with the unpacked arguments.
    fn call(self, args: Args) -> Self::Output;

    /// How a process or cluster worker calls this task: the trampoline and
    /// the encoded captures. Compiles only for tasks a worker can rebuild
    /// (zero-sized functions, and `Bound`).
    #[doc(hidden)]
    fn __callee(&self) -> crate::Result<crate::ship::Callee>
    where
        Args: Payload,
        Self::Output: Payload,
    {
        Ok(crate::ship::Callee::plain(crate::ship::trampoline_of::<
            Self,
            Args,
        >()))
    }
}

macro_rules! impl_task {
    ($($arg:ident),*) => {
        impl<Func, Ret, $($arg,)*> Task<($($arg,)*)> for Func
        where
            Func: Fn($($arg),*) -> Ret + Copy + Send + Sync + 'static,
        {
            type Output = Ret;

            #[allow(non_snake_case, clippy::unused_unit)]
            #[inline]
            fn call(self, ($($arg,)*): ($($arg,)*)) -> Ret {
                self($($arg),*)
            }
        }
    };
}

impl_task!();
impl_task!(A1);
impl_task!(A1, A2);
impl_task!(A1, A2, A3);
impl_task!(A1, A2, A3, A4);
impl_task!(A1, A2, A3, A4, A5);
impl_task!(A1, A2, A3, A4, A5, A6);
impl_task!(A1, A2, A3, A4, A5, A6, A7);
impl_task!(A1, A2, A3, A4, A5, A6, A7, A8);
