//! What can be submitted: [`Task`] (a copyable callable) and [`Payload`]
//! (a value that can cross a process or host boundary).

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

/// A callable that can be shipped to a worker: a function item or a
/// closure, called with its arguments as a tuple `Args = (A1, ..., An)`.
///
/// Implemented for every `F: Fn(A1, ..., An) -> R + Copy + Send + Sync + 'static`
/// with 0 to 8 arguments. Function items and non-capturing closures are
/// zero-sized and work on every backend; a capturing closure works on the
/// thread pool only.
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
pub trait Task<Args>: Copy + Send + Sync + 'static {
    /// What the call returns.
    type Output;

    /// Calls the function with the unpacked arguments.
    fn call(self, args: Args) -> Self::Output;
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
