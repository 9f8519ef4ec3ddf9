//! Shipping a call to another process of the same binary.
//!
//! A call travels as the offset of a monomorphised trampoline's [`Entry`]
//! from a fixed anchor function in this crate, the postcard-encoded captures
//! (empty for a fn item; the `C` of a [`Bound`](crate::Bound)) and the
//! postcard-encoded arguments. Parent and worker run the same binary, so
//! addresses differ only by the load base; the function itself is
//! zero-sized, so the worker conjures it.
//!
//! Four guards stand between a frame and a jump:
//! 1. the function must be zero-sized and without drop glue — a
//!    post-monomorphisation assertion, so a capturing closure given to a
//!    remote backend does not compile (see [`assert_shippable`] for exactly
//!    what that admits);
//! 2. every frame carries the sender's build id, and a worker refuses frames
//!    from a different build ([`build_id`]);
//! 3. the offset must name an [`Entry`]: an aligned address inside a
//!    read-only segment of this binary (never the heap, the stack or writable
//!    data, where a sender's bytes could be), holding [`ENTRY_TAG`] and this
//!    process's anchor address — only the entries `trampoline_of` emits look
//!    like that, so an offset into the middle of one, or of a function, is
//!    refused ([`resolve`]);
//! 4. the entry's function pointer must lie in this binary's executable code.

use crate::{panic, Error, Payload, Task};
use serde::{Deserialize, Serialize};
use std::any::{Any, TypeId};
use std::sync::OnceLock;

/// What a trampoline does: decode the captures (once per frame, kept in
/// [`Captures`]) and the arguments, call, append the encoded output.
pub(crate) type Trampoline =
    fn(captures: &mut Captures<'_>, args: &[u8], out: &mut Vec<u8>) -> Result<(), WireError>;

/// The tag at the start of every [`Entry`] (an arbitrary constant; the
/// anchor address beside it is what no other data in the binary holds).
const ENTRY_TAG: u64 = 0x9d3c_51e0_f4a7_2b68;

/// What a shipped offset names: a trampoline with a tag stored beside it.
/// One is emitted (as a promoted constant, in read-only data) for every
/// trampoline `trampoline_of` monomorphises, and nowhere else.
#[repr(C)]
pub(crate) struct Entry {
    tag: u64,
    anchor: fn(),
    run: Trampoline,
}

/// [`Entry`] as plain integers (same layout: fn pointers are address-sized).
#[repr(C)]
struct RawEntry {
    tag: u64,
    anchor: usize,
    run: usize,
}

const _: () = assert!(
    std::mem::size_of::<RawEntry>() == std::mem::size_of::<Entry>()
        && std::mem::align_of::<RawEntry>() == std::mem::align_of::<Entry>()
);

/// How to call a task in another process: its trampoline's offset and its
/// encoded captures (empty unless it is a [`Bound`](crate::Bound)). Built
/// once per `submit` or per `map`, and shared by every chunk of that map.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct Callee {
    pub(crate) trampoline: u64,
    /// Shared with the frames that carry it (no copy per chunk).
    pub(crate) captures: std::sync::Arc<Encoded>,
}

impl Callee {
    /// A callee without captures.
    pub(crate) fn plain(trampoline: u64) -> Callee {
        // One shared empty record: a call of a fn item allocates nothing here.
        static NONE: std::sync::OnceLock<std::sync::Arc<Encoded>> = std::sync::OnceLock::new();
        Callee {
            trampoline,
            captures: NONE.get_or_init(Default::default).clone(),
        }
    }

    /// The encoded captures.
    pub(crate) fn captures(&self) -> &[u8] {
        &self.captures.head
    }
}

/// A frame's captures as a trampoline sees them: the bytes, and the value
/// decoded from them by the first call of the frame, reused by the others.
pub(crate) struct Captures<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) decoded: Option<Box<dyn Any>>,
}

/// An error produced on the worker side, sent back inside a result frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    /// The call panicked.
    Panicked {
        /// Panic message.
        message: String,
        /// `file:line:column`.
        location: Option<String>,
        /// Backtrace captured in the worker.
        backtrace: Option<String>,
    },
    /// Arguments or output could not be (de)serialized.
    Codec {
        /// The Rust type.
        type_name: String,
        /// The codec's message.
        message: String,
    },
    /// The worker refused to run the call (wrong build, bad trampoline).
    Refused {
        /// Why.
        message: String,
    },
    /// The call ran past its run-time limit; the worker is being replaced.
    Timeout {
        /// What ran too long, naming the limit.
        what: String,
    },
}

impl WireError {
    /// The crate error for this worker-side error, naming the worker.
    pub(crate) fn into_error(self, worker: &str) -> Error {
        match self {
            WireError::Panicked {
                message,
                location,
                backtrace,
            } => Error::Panicked {
                message,
                location,
                worker: Some(worker.to_string()),
                backtrace,
            },
            WireError::Codec { type_name, message } => Error::Codec {
                type_name,
                message: format!("{message} (in {worker})"),
            },
            WireError::Refused { message } => Error::Codec {
                type_name: "call".into(),
                message: format!("{worker} refused the call: {message}"),
            },
            WireError::Timeout { what } => Error::Timeout {
                what: format!("{what} ({worker})"),
            },
        }
    }
}

impl From<Error> for WireError {
    fn from(e: Error) -> Self {
        match e {
            Error::Panicked {
                message,
                location,
                backtrace,
                ..
            } => WireError::Panicked {
                message,
                location,
                backtrace,
            },
            Error::Codec { type_name, message } => WireError::Codec { type_name, message },
            other => WireError::Refused {
                message: other.to_string(),
            },
        }
    }
}

#[inline(never)]
fn anchor() {}

fn anchor_addr() -> usize {
    anchor as fn() as usize
}

/// Encodes a payload with postcard, naming the type on failure.
///
/// Byte vectors (`Vec<u8>`, alone or as a one-argument tuple) take a fast
/// path: postcard spells them as a varint length and the raw bytes, which is
/// written with one copy instead of serde's byte-at-a-time sequence.
pub(crate) fn encode<T: serde::Serialize + 'static>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let any = value as &dyn Any;
    let bytes = any
        .downcast_ref::<Vec<u8>>()
        .or_else(|| any.downcast_ref::<(Vec<u8>,)>().map(|t| &t.0));
    if let Some(bytes) = bytes {
        reserve_large(out, bytes.len() + 10);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
        return Ok(());
    }
    let at = out.len();
    postcard::serialize_with_flavor(value, Append(&mut *out)).map_err(|e| {
        out.truncate(at);
        Error::Codec {
            type_name: std::any::type_name::<T>().to_string(),
            message: e.to_string(),
        }
    })
}

/// A postcard output appending to a borrowed `Vec` (what `postcard::to_io`
/// does through `io::Write`, without a `write_all` call per byte).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Encoded arguments, split so that a byte vector's buffer is moved rather
/// than copied: `head` is the whole postcard encoding, or for a byte vector
/// just its length prefix with the caller's buffer in `body`.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    pub(crate) head: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

impl Encoded {
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

/// The buffer of `value` if it is a `Vec<u8>` (alone or as a one-element
/// tuple); otherwise `value` back.
pub(crate) fn bytes_of<T: 'static>(value: T) -> Result<Vec<u8>, Option<T>> {
    let mut slot = Some(value);
    let any: &mut dyn Any = &mut slot;
    let bytes = if let Some(v) = any.downcast_mut::<Option<Vec<u8>>>() {
        v.take()
    } else if let Some(t) = any.downcast_mut::<Option<(Vec<u8>,)>>() {
        t.take().map(|t| t.0)
    } else {
        None
    };
    bytes.ok_or(slot)
}

/// Encodes owned arguments (see [`Encoded`]); same bytes as [`encode`].
pub(crate) fn encode_owned<T: serde::Serialize + 'static>(value: T) -> Result<Encoded, Error> {
    let mut head = Vec::new();
    match bytes_of(value) {
        Ok(body) => {
            put_varint(&mut head, body.len() as u64);
            return Ok(Encoded { head, body });
        }
        Err(Some(value)) => encode(&value, &mut head)?,
        Err(None) => {}
    }
    Ok(Encoded {
        head,
        body: Vec::new(),
    })
}

/// Decodes a payload with postcard, naming the type on failure (with the
/// same byte-vector fast path as [`encode`]).
pub(crate) fn decode<T: serde::de::DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, Error> {
    let codec_error = |message: String| Error::Codec {
        type_name: std::any::type_name::<T>().to_string(),
        message,
    };
    let want = TypeId::of::<T>();
    if want == TypeId::of::<Vec<u8>>() || want == TypeId::of::<(Vec<u8>,)>() {
        let (len, at) = get_varint(bytes).ok_or_else(|| codec_error("malformed length".into()))?;
        // Only the length prefix: the bytes were read from the other
        // process's memory for this frame (`process::cma`).
        let incoming = (at == bytes.len() && len > 0)
            .then(|| crate::process::spare::take_incoming(len))
            .flatten();
        let owned = match incoming {
            Some(v) => v,
            None => {
                let body = bytes
                    .get(at..)
                    .filter(|b| b.len() as u64 == len)
                    .ok_or_else(|| codec_error(format!("expected {len} bytes of data")))?;
                crate::process::spare::copied(body)
            }
        };
        let boxed: Box<dyn Any> = if want == TypeId::of::<Vec<u8>>() {
            Box::new(owned)
        } else {
            Box::new((owned,))
        };
        return boxed
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| codec_error("internal type mismatch".into()));
    }
    postcard::from_bytes(bytes).map_err(|e| codec_error(e.to_string()))
}

/// Reserves room for `additional` more bytes; a large buffer is marked for
/// transparent huge pages before it is first touched, which cuts the page
/// faults of filling it by a factor of 512 (they dominate copying 64 MiB).
pub(crate) fn reserve_large(v: &mut Vec<u8>, additional: usize) {
    const LARGE: usize = 4 << 20;
    let before = v.as_ptr();
    v.reserve(additional);
    if v.capacity() >= LARGE && (v.as_ptr() != before || additional >= LARGE) {
        let page = 4096;
        let start = (v.as_ptr() as usize + page - 1) & !(page - 1);
        let end = (v.as_ptr() as usize + v.capacity()) & !(page - 1);
        if end > start {
            // SAFETY: advice on pages inside our own allocation; MADV_HUGEPAGE
            // never changes their contents. Failure (no THP) is harmless.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub(crate) fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

/// Asserts (post-monomorphisation) that `F` can be conjured in a worker.
///
/// What passes: a type that is zero-sized and has no drop glue. That is
/// every fn item and non-capturing closure, and also a closure (or a
/// hand-written [`Task`]) whose captures are all zero-sized and `Copy`
/// (`()`, `PhantomData<T>`, unit structs); no trait tells those apart from a
/// non-capturing closure on stable Rust. Conjuring such a value is sound:
/// it has no bytes, so the value the worker makes is bit-for-bit the one
/// a copy would be, and without drop glue nothing runs when it is dropped.
/// (An uninhabited zero-sized type cannot reach a call in the sender; in a
/// worker, a frame naming its trampoline makes `mem::zeroed` abort the
/// worker — a `WorkerLost`, never a call.) What
/// the worker does not have is any process-local fact the sender's value
/// stood for: a zero-sized token meaning "this process has been
/// initialised" is, in a worker, only a token.
pub(crate) const fn assert_shippable<F>() {
    assert!(
        shippable::<F>(),
        "fanout: only fn items and non-capturing closures can run on a process or cluster \
         backend; this closure captures variables (pass them as arguments, or wrap the \
         function with fanout::bind(captures, f))"
    )
}

/// Whether a worker can conjure an `F` (see [`assert_shippable`]).
pub(crate) const fn shippable<F>() -> bool {
    std::mem::size_of::<F>() == 0 && !std::mem::needs_drop::<F>()
}

/// Makes the value of a type [`assert_shippable`] accepts.
fn conjure<F>() -> F {
    const { assert_shippable::<F>() };
    // SAFETY: `F` is zero-sized and has no drop glue (asserted above at
    // compile time): a zero-sized value has no bytes that could be invalid.
    unsafe { std::mem::zeroed() }
}

/// The offset of `entry` from the anchor: what travels in a frame.
fn offset_of_entry(entry: &'static Entry) -> u64 {
    (entry as *const Entry as usize).wrapping_sub(anchor_addr()) as u64
}

/// The trampoline offset for calls of `F` with `Args` (no captures).
///
/// Fails to compile (post-monomorphisation) when `F` captures something:
/// such a call cannot be shipped ([`assert_shippable`]).
pub(crate) fn trampoline_of<F, Args>() -> u64
where
    F: Task<Args>,
    Args: Payload,
    F::Output: Payload,
{
    const { assert_shippable::<F>() };
    offset_of_entry(
        const {
            &Entry {
                tag: ENTRY_TAG,
                anchor,
                run: run::<F, Args>,
            }
        },
    )
}

/// The trampoline offset for calls of `bind(c, f)` (a `Bound<C, F>`) with
/// `Args`: its trampoline decodes `C` from the frame's captures.
pub(crate) fn bound_trampoline_of<C, F, Args>() -> u64
where
    C: Payload + Clone + Sync,
    F: Copy + Send + Sync + 'static,
    crate::Bound<C, F>: Task<Args>,
    Args: Payload,
    <crate::Bound<C, F> as Task<Args>>::Output: Payload,
{
    const { assert_shippable::<F>() };
    offset_of_entry(
        const {
            &Entry {
                tag: ENTRY_TAG,
                anchor,
                run: run_bound::<C, F, Args>,
            }
        },
    )
}

fn run<F, Args>(_: &mut Captures<'_>, args: &[u8], out: &mut Vec<u8>) -> Result<(), WireError>
where
    F: Task<Args>,
    Args: Payload,
    F::Output: Payload,
{
    // Decoding the arguments, encoding the output and dropping both run user
    // code too (serde impls, `Drop`), so the whole call is inside `catch`: a
    // panic there is the task's panic. Escaping, it would abort a spawned
    // worker (we are below an `extern "C"` constructor) and unwind a forked
    // one into its copy of the pool thread's stack.
    panic::catch(|| {
        let args: Args = decode(args)?;
        let f: F = conjure();
        let output = f.call(args);
        crate::process::spare::encode_output(output, out)
    })
    .and_then(|encoded| encoded)
    .map_err(WireError::from)
}

fn run_bound<C, F, Args>(
    captures: &mut Captures<'_>,
    args: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), WireError>
where
    C: Payload + Clone + Sync,
    F: Copy + Send + Sync + 'static,
    crate::Bound<C, F>: Task<Args>,
    Args: Payload,
    <crate::Bound<C, F> as Task<Args>>::Output: Payload,
{
    panic::catch(|| {
        if captures.decoded.is_none() {
            // Decoded by the first call of the frame; a failure (or a panic)
            // fails this item, and the next one tries again.
            let c: C = decode(captures.bytes)?;
            let bound = crate::bound::bind(c, conjure::<F>());
            captures.decoded = Some(Box::new(bound));
        }
        let bound = captures
            .decoded
            .as_ref()
            .and_then(|b| b.downcast_ref::<crate::Bound<C, F>>())
            .ok_or_else(|| Error::Codec {
                type_name: std::any::type_name::<C>().to_string(),
                message: "internal: the frame's captures were decoded as another type".into(),
            })?
            .clone();
        let args: Args = decode(args)?;
        let output = bound.call(args);
        crate::process::spare::encode_output(output, out)
    })
    .and_then(|encoded| encoded)
    .map_err(WireError::from)
}

/// The pieces of a TASK frame for `f`, for tests that lay frames out by
/// hand: this binary's build id, `f`'s trampoline offset, and its encoded
/// captures.
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
/// let (build_id, offset, captures) = fanout::__frame_parts::<_, (u64,)>(&square)?;
/// assert_ne!(build_id, [0; 16]);
/// assert!(captures.is_empty());
/// let (_, bound_offset, captures) =
///     fanout::__frame_parts::<_, (u64,)>(&fanout::bind(3u8, |k: &u8, x: u64| x * *k as u64))?;
/// assert_ne!(offset, bound_offset);
/// assert_eq!(captures, [3]);
/// # Ok::<(), fanout::Error>(())
/// ```
#[doc(hidden)]
pub fn frame_parts<F, Args>(f: &F) -> Result<(BuildId, u64, Vec<u8>), Error>
where
    F: Task<Args>,
    Args: Payload,
    F::Output: Payload,
{
    let callee = f.__callee()?;
    Ok((*build_id(), callee.trampoline, callee.captures().to_vec()))
}

/// Encodes a task's captures for shipping (a panicking `Serialize` is a
/// `Codec` error, not a panic in the caller).
pub(crate) fn encode_captures<C: serde::Serialize + 'static>(
    captures: &C,
) -> Result<std::sync::Arc<Encoded>, Error> {
    let mut head = Vec::new();
    panic::catch(|| encode(captures, &mut head))
        .map_err(|e| Error::Codec {
            type_name: std::any::type_name::<C>().to_string(),
            message: format!("serializing the captures panicked: {e}"),
        })
        .and_then(|r| r)?;
    Ok(std::sync::Arc::new(Encoded {
        head,
        body: Vec::new(),
    }))
}

/// A 16-byte identity of the running binary.
pub type BuildId = [u8; 16];

struct Image {
    build_id: BuildId,
    /// Executable address ranges of the object that contains the anchor.
    text: Vec<(usize, usize)>,
    /// Address ranges of that object that are never written after start-up:
    /// its read-only loaded segments and its RELRO range.
    readonly: Vec<(usize, usize)>,
}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mut found = scan_loaded_object();
        if found.build_id.is_none() {
            found.build_id = Some(hash_exe());
        }
        Image {
            build_id: found.build_id.unwrap_or_default(),
            text: found.text,
            readonly: found.readonly,
        }
    })
}

/// The running binary's build id: its `.note.gnu.build-id` (first 16 bytes),
/// or a hash of `/proc/self/exe` when the note is missing.
pub(crate) fn build_id() -> &'static BuildId {
    &image().build_id
}

/// Hex spelling of a build id, for messages.
pub(crate) fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A call resolved from a frame: its trampoline and the frame's captures.
/// Call it once per item; the captures are decoded by the first call.
pub(crate) struct Resolved<'a> {
    run: Trampoline,
    captures: Captures<'a>,
}

impl Resolved<'_> {
    /// Runs one item: decodes `args`, calls, appends the encoded output.
    pub(crate) fn call(&mut self, args: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        (self.run)(&mut self.captures, args, out)
    }
}

impl Drop for Resolved<'_> {
    fn drop(&mut self) {
        // The decoded captures are user data: their `Drop` may panic.
        if let Some(decoded) = self.captures.decoded.take() {
            if let Err(e) = panic::catch(move || drop(decoded)) {
                log::warn!("dropping a call's captures panicked: {e}");
            }
        }
    }
}

/// The trampoline whose [`Entry`] is at `offset`, with the captures that
/// came beside it; refused unless `offset` names a real entry (see the
/// module docs, guards 3 and 4).
pub(crate) fn resolve(offset: u64, captures: &[u8]) -> Result<Resolved<'_>, String> {
    let refuse = |why: &str| {
        Err(format!(
            "trampoline offset {offset:#x} does not name a trampoline of this binary ({why}); \
             the frame is forged or corrupt, and nothing was run"
        ))
    };
    let addr = anchor_addr().wrapping_add(offset as usize);
    let image = image();
    let size = std::mem::size_of::<Entry>();
    if !addr.is_multiple_of(std::mem::align_of::<Entry>()) {
        return refuse("misaligned");
    }
    let inside = |ranges: &[(usize, usize)], lo: usize, len: usize| {
        lo.checked_add(len)
            .is_some_and(|hi| ranges.iter().any(|&(a, b)| lo >= a && hi <= b))
    };
    if !inside(&image.readonly, addr, size) {
        return refuse("outside the binary's read-only data");
    }
    // SAFETY: `addr..addr + size` lies inside a loaded, readable segment of
    // this binary that nothing writes after start-up, and is aligned for
    // `Entry`; we read it as plain integers before trusting any of them.
    let raw = unsafe { std::ptr::read(addr as *const RawEntry) };
    if raw.tag != ENTRY_TAG || raw.anchor != anchor_addr() {
        return refuse("no trampoline tag there");
    }
    if !inside(&image.text, raw.run, 1) {
        return refuse("its function lies outside the binary's code");
    }
    // SAFETY: the words at `addr` are an `Entry`'s tag and anchor, which only
    // the entries `trampoline_of`/`bound_trampoline_of` emit hold, so `addr`
    // is one of those `Entry` constants, in memory that lives for the
    // whole process.
    let entry: &'static Entry = unsafe { &*(addr as *const Entry) };
    Ok(Resolved {
        run: entry.run,
        captures: Captures {
            bytes: captures,
            decoded: None,
        },
    })
}

#[derive(Default)]
struct Scan {
    build_id: Option<BuildId>,
    text: Vec<(usize, usize)>,
    readonly: Vec<(usize, usize)>,
    target: usize,
    matched: bool,
}

fn scan_loaded_object() -> Scan {
    let mut scan = Scan {
        target: anchor_addr(),
        ..Scan::default()
    };
    // SAFETY: `visit` only reads the program headers glibc hands it, for the
    // duration of the call, and writes through the `Scan` pointer we pass.
    unsafe {
        libc::dl_iterate_phdr(Some(visit), &mut scan as *mut Scan as *mut libc::c_void);
    }
    scan
}

unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: glibc passes a valid `dl_phdr_info` whose `dlpi_phdr` points at
    // `dlpi_phnum` program headers, and `data` is the `Scan` we passed.
    let (info, scan) = unsafe { (&*info, &mut *(data as *mut Scan)) };
    let base = info.dlpi_addr as usize;
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let contains = phdrs.iter().any(|p| {
        p.p_type == libc::PT_LOAD
            && (base + p.p_vaddr as usize..base + (p.p_vaddr + p.p_memsz) as usize)
                .contains(&scan.target)
    });
    if !contains {
        return 0;
    }
    scan.matched = true;
    for p in phdrs {
        let start = base + p.p_vaddr as usize;
        let range = (start, start + p.p_memsz as usize);
        if p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0 {
            scan.text.push(range);
        }
        if (p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_W == 0)
            || p.p_type == libc::PT_GNU_RELRO
        {
            scan.readonly.push(range);
        }
        if p.p_type == libc::PT_NOTE && scan.build_id.is_none() {
            // SAFETY: a PT_NOTE segment of a loaded object is mapped readable.
            let notes =
                unsafe { std::slice::from_raw_parts(start as *const u8, p.p_memsz as usize) };
            scan.build_id = gnu_build_id(notes);
        }
    }
    1
}

/// Finds an `NT_GNU_BUILD_ID` note in a note segment.
fn gnu_build_id(mut notes: &[u8]) -> Option<BuildId> {
    let align4 = |n: usize| (n + 3) & !3;
    let word = |b: &[u8], i: usize| -> Option<usize> {
        Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    while notes.len() >= 12 {
        let (namesz, descsz, kind) = (word(notes, 0)?, word(notes, 4)?, word(notes, 8)?);
        let name_end = 12 + align4(namesz);
        let desc_end = name_end.checked_add(align4(descsz))?;
        let name = notes.get(12..12 + namesz)?;
        let desc = notes.get(name_end..name_end + descsz)?;
        if kind == 3 && name == b"GNU\0" && !desc.is_empty() {
            let mut id = BuildId::default();
            let n = desc.len().min(16);
            id[..n].copy_from_slice(&desc[..n]);
            return Some(id);
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

fn hash_exe() -> BuildId {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read("/proc/self/exe").unwrap_or_default();
    let mut id = BuildId::default();
    for (i, half) in id.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (i as u64).hash(&mut h);
        bytes.hash(&mut h);
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: i32, b: i32) -> i32 {
        a + b
    }

    #[test]
    fn trampoline_round_trip() {
        let offset = trampoline_of_item(add);
        let mut t = resolve(offset, &[]).expect("a real trampoline");
        let mut args = Vec::new();
        encode(&(2i32, 3i32), &mut args).unwrap();
        let mut out = Vec::new();
        t.call(&args, &mut out).unwrap();
        assert_eq!(decode::<i32>(&out).unwrap(), 5);
    }

    #[test]
    fn bound_trampoline_decodes_captures_once_per_frame() {
        #[allow(clippy::ptr_arg)] // the captures are a `Vec`, so `f` takes `&Vec`
        fn pick(v: &Vec<i32>, i: usize) -> i32 {
            v[i]
        }
        fn offset_of<F: Copy + Send + Sync + 'static>(_: F) -> u64
        where
            crate::Bound<Vec<i32>, F>: Task<(usize,), Output = i32>,
        {
            bound_trampoline_of::<Vec<i32>, F, (usize,)>()
        }
        let offset = offset_of(pick);
        let captures = postcard::to_allocvec(&vec![10i32, 20, 30]).unwrap();
        let mut t = resolve(offset, &captures).expect("a real trampoline");
        for (i, want) in [(2usize, 30), (0, 10)] {
            let mut out = Vec::new();
            t.call(&postcard::to_allocvec(&(i,)).unwrap(), &mut out)
                .unwrap();
            assert_eq!(decode::<i32>(&out).unwrap(), want);
        }
        assert!(t.captures.decoded.is_some());
        // Captures that do not decode fail each item with Codec.
        let mut t = resolve(offset, &[0xff]).unwrap();
        let err = t.call(&[0], &mut Vec::new()).unwrap_err();
        assert!(matches!(err, WireError::Codec { .. }), "{err:?}");
    }

    #[test]
    fn only_real_entries_resolve() {
        let offset = trampoline_of_item(add);
        for delta in [1u64, 2, 4, 7, 8, 16, 24, 0u64.wrapping_sub(8)] {
            let forged = offset.wrapping_add(delta);
            let e = resolve(forged, &[]).err().expect("forged offset refused");
            assert!(e.contains("does not name a trampoline"), "{e}");
        }
        // The functions themselves (what older frames named) are refused too.
        fn fn_offset<F: Task<(i32, i32), Output = i32>>(_: F) -> u64 {
            let t: Trampoline = run::<F, (i32, i32)>;
            (t as usize).wrapping_sub(anchor_addr()) as u64
        }
        assert!(resolve(fn_offset(add), &[]).is_err());
        assert!(resolve(0, &[]).is_err());
    }

    fn trampoline_of_item<F: Task<(i32, i32), Output = i32>>(_: F) -> u64 {
        trampoline_of::<F, (i32, i32)>()
    }

    #[test]
    fn byte_fast_path_matches_postcard() {
        let v: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut fast = Vec::new();
        encode(&v, &mut fast).unwrap();
        assert_eq!(fast, postcard::to_allocvec(&v).unwrap());
        let mut tuple = Vec::new();
        encode(&(v.clone(),), &mut tuple).unwrap();
        assert_eq!(tuple, fast);
        assert_eq!(decode::<Vec<u8>>(&fast).unwrap(), v);
        assert_eq!(decode::<(Vec<u8>,)>(&fast).unwrap().0, v);
        let owned = encode_owned((v.clone(),)).unwrap();
        assert_eq!([owned.head, owned.body].concat(), fast);
        let owned = encode_owned((1u32, v.clone())).unwrap();
        assert_eq!(
            owned.head,
            postcard::to_allocvec(&(1u32, v.clone())).unwrap()
        );
        assert!(decode::<Vec<u8>>(&fast[..10]).is_err());
        assert!(decode::<Vec<u8>>(&[0xff; 12]).is_err());
    }

    #[test]
    fn offsets_outside_text_are_refused() {
        assert!(resolve(u64::MAX / 2, &[]).is_err());
        assert!(resolve(0u64.wrapping_sub(anchor_addr() as u64), &[]).is_err());
    }

    #[test]
    fn build_id_is_stable_and_nonzero() {
        assert_eq!(build_id(), build_id());
        assert_ne!(build_id(), &BuildId::default());
    }
}
