//! [`AnyExecutor`]: pick the backend at run time from a URL or the environment.

use crate::executor::Submitter;
#[cfg(target_os = "linux")]
use crate::{Cluster, ProcessPool, StartMethod};
use crate::{Error, Executor, Future, Payload, Result, Task, ThreadPool};

const EXPECTED: &str =
    "expected thread://N, process://N (optionally ?start=fork&max_tasks_per_child=N) \
    or redis://host:port/db?namespace=NAME&workers=N";

/// Any of the backends, chosen at run time.
///
/// The same code runs on each; [`AnyExecutor::from_env`] lets a deployment
/// pick one without recompiling (`FANOUT_EXECUTOR=process://8`).
///
/// ```
/// use fanout::{AnyExecutor, Executor};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// for url in ["thread://2", "process://2"] {
///     let ex = AnyExecutor::from_url(url).unwrap();
///     assert_eq!(ex.submit(square, (12,)).unwrap().result(), Ok(144));
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyExecutor {
    /// A [`ThreadPool`].
    Thread(ThreadPool),
    /// A [`ProcessPool`].
    #[cfg(target_os = "linux")]
    Process(ProcessPool),
    /// A [`Cluster`] on Redis Streams.
    #[cfg(target_os = "linux")]
    Cluster(Cluster),
}

fn parse_count(scheme: &str, text: &str) -> Result<usize> {
    if text.is_empty() {
        return Ok(num_cpus::get());
    }
    text.parse::<usize>().map_err(|_| {
        Error::invalid(format!(
            "the worker count in '{scheme}://{text}' is not a whole number; {EXPECTED}"
        ))
    })
}

/// Splits `a=1&b=2` into pairs, rejecting anything malformed.
fn query_pairs(query: &str) -> Result<Vec<(&str, &str)>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=').ok_or_else(|| {
                Error::invalid(format!("query parameter '{p}' has no value; {EXPECTED}"))
            })
        })
        .collect()
}

impl AnyExecutor {
    /// Builds an executor from a URL.
    ///
    /// * `thread://N` — a [`ThreadPool`] of N threads (`thread://` = one per CPU);
    /// * `process://N` — a [`ProcessPool`] of N workers, with optional
    ///   `?start=fork|spawn&max_tasks_per_child=N`;
    /// * `redis://host:port/db?namespace=NAME&workers=N` (or `rediss://`) — a
    ///   cluster whose `workers` local worker processes start on this host.
    ///
    /// Anything else is [`Error::InvalidArgument`] saying what was expected.
    ///
    /// ```
    /// use fanout::{AnyExecutor, Error};
    /// assert!(matches!(AnyExecutor::from_url("thread://4"), Ok(AnyExecutor::Thread(_))));
    /// assert!(matches!(AnyExecutor::from_url("carrier-pigeon://2"), Err(Error::InvalidArgument { .. })));
    /// assert!(matches!(AnyExecutor::from_url("thread://many"), Err(Error::InvalidArgument { .. })));
    /// ```
    pub fn from_url(url: &str) -> Result<AnyExecutor> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(Error::invalid(format!(
                "'{url}' is not an executor URL; {EXPECTED}"
            )));
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        match scheme {
            "thread" => {
                if !query.is_empty() {
                    return Err(Error::invalid(format!(
                        "thread:// takes no options (got '?{query}'); {EXPECTED}"
                    )));
                }
                let workers = parse_count(scheme, authority.trim_end_matches('/'))?;
                if workers == 0 {
                    return Err(Error::invalid(format!(
                        "'{url}' asks for 0 workers; {EXPECTED}"
                    )));
                }
                ThreadPool::new(workers).map(AnyExecutor::Thread)
            }
            #[cfg(target_os = "linux")]
            "process" => {
                let workers = parse_count(scheme, authority.trim_end_matches('/'))?;
                let mut builder = ProcessPool::builder().workers(workers);
                for (key, value) in query_pairs(query)? {
                    builder = match (key, value) {
                        ("start", "fork") => builder.start_method(StartMethod::Fork),
                        ("start", "spawn") => builder.start_method(StartMethod::Spawn),
                        ("max_tasks_per_child", n) => {
                            builder.max_tasks_per_child(n.parse().map_err(|_| {
                                Error::invalid(format!(
                                    "max_tasks_per_child={n} is not a whole number; {EXPECTED}"
                                ))
                            })?)
                        }
                        _ => {
                            return Err(Error::invalid(format!(
                                "unknown process:// option '{key}={value}'; {EXPECTED}"
                            )))
                        }
                    };
                }
                if workers == 0 {
                    return Err(Error::invalid(format!(
                        "'{url}' asks for 0 workers; {EXPECTED}"
                    )));
                }
                builder.build().map(AnyExecutor::Process)
            }
            #[cfg(target_os = "linux")]
            "redis" | "rediss" => {
                // fanout's own options come off the query; the rest (if any)
                // stays on the URL for the Redis client.
                let (mut namespace, mut workers, mut passthrough) = (None, 0, Vec::new());
                for (key, value) in query_pairs(query)? {
                    match key {
                        "namespace" if !value.is_empty() => namespace = Some(value.to_string()),
                        "workers" => {
                            workers = value.parse().map_err(|_| {
                                Error::invalid(format!(
                                    "workers={value} is not a whole number; {EXPECTED}"
                                ))
                            })?
                        }
                        "namespace" => {
                            return Err(Error::invalid(format!(
                                "the namespace in '{url}' is empty; {EXPECTED}"
                            )))
                        }
                        _ => passthrough.push(format!("{key}={value}")),
                    }
                }
                let mut redis_url = format!("{scheme}://{authority}");
                if !passthrough.is_empty() {
                    redis_url = format!("{redis_url}?{}", passthrough.join("&"));
                }
                let mut builder = Cluster::builder(&redis_url).local_workers(workers);
                if let Some(ns) = namespace {
                    builder = builder.namespace(ns);
                }
                builder.build().map(AnyExecutor::Cluster)
            }
            _ => Err(Error::invalid(format!(
                "unknown executor URL scheme '{scheme}' in '{url}'; {EXPECTED}"
            ))),
        }
    }

    /// Builds the executor named by `FANOUT_EXECUTOR`, or a thread pool with
    /// one thread per CPU when it is unset.
    ///
    /// ```
    /// // With FANOUT_EXECUTOR unset this is a thread pool.
    /// let ex = fanout::AnyExecutor::from_env().unwrap();
    /// # let _ = ex;
    /// ```
    pub fn from_env() -> Result<AnyExecutor> {
        match std::env::var("FANOUT_EXECUTOR") {
            Ok(url) if !url.trim().is_empty() => AnyExecutor::from_url(&url),
            _ => AnyExecutor::from_url(&format!("thread://{}", num_cpus::get())),
        }
    }

    /// The backend's name: `"thread"`, `"process"` or `"cluster"`.
    ///
    /// ```
    /// assert_eq!(fanout::AnyExecutor::from_url("thread://1").unwrap().kind(), "thread");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            AnyExecutor::Thread(_) => "thread",
            #[cfg(target_os = "linux")]
            AnyExecutor::Process(_) => "process",
            #[cfg(target_os = "linux")]
            AnyExecutor::Cluster(_) => "cluster",
        }
    }
}

macro_rules! each_backend {
    ($self:expr, $ex:ident => $body:expr) => {
        match $self {
            AnyExecutor::Thread($ex) => $body,
            #[cfg(target_os = "linux")]
            AnyExecutor::Process($ex) => $body,
            #[cfg(target_os = "linux")]
            AnyExecutor::Cluster($ex) => $body,
        }
    };
}

impl Executor for AnyExecutor {
    fn submit<F, Args>(&self, f: F, args: Args) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        each_backend!(self, ex => ex.submit(f, args))
    }

    fn submit_with<F, Args>(
        &self,
        f: F,
        args: Args,
        options: &crate::CallOptions,
    ) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        each_backend!(self, ex => ex.submit_with(f, args, options))
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        each_backend!(self, ex => ex.shutdown(wait, cancel_futures))
    }

    fn submitter<F, Args>(&self, f: F) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        each_backend!(self, ex => ex.submitter(f))
    }

    fn chunk_submitter<F, Args>(&self, f: F) -> crate::ChunkSubmitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        each_backend!(self, ex => ex.chunk_submitter(f))
    }

    fn submitter_with<F, Args>(
        &self,
        f: F,
        options: &crate::CallOptions,
    ) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        each_backend!(self, ex => ex.submitter_with(f, options))
    }

    fn owner(&self) -> u64 {
        each_backend!(self, ex => ex.owner())
    }

    fn launcher<F, Args>(&self, f: F) -> crate::graph::Launcher<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        each_backend!(self, ex => ex.launcher(f))
    }

    fn put<T: Payload + Clone>(&self, value: T) -> Result<Future<T>> {
        each_backend!(self, ex => ex.put(value))
    }
}

impl From<ThreadPool> for AnyExecutor {
    fn from(pool: ThreadPool) -> Self {
        AnyExecutor::Thread(pool)
    }
}

#[cfg(target_os = "linux")]
impl From<ProcessPool> for AnyExecutor {
    fn from(pool: ProcessPool) -> Self {
        AnyExecutor::Process(pool)
    }
}

#[cfg(target_os = "linux")]
impl From<Cluster> for AnyExecutor {
    fn from(cluster: Cluster) -> Self {
        AnyExecutor::Cluster(cluster)
    }
}
