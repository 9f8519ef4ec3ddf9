//! Shipping a call to another process of the same binary.
//!
//! A call travels as the offset of a monomorphised trampoline `run::<F, Args>`
//! from a fixed anchor function in this crate, plus the postcard-encoded
//! arguments. Parent and worker run the same binary, so code addresses differ
//! only by the load base; `F` is zero-sized, so the worker conjures it.
//!
//! Three guards stand between a frame and a jump:
//! 1. `F` must be zero-sized — a post-monomorphisation assertion, so a
//!    capturing closure given to a remote backend does not compile;
//! 2. every frame carries the sender's build id, and a worker refuses frames
//!    from a different build ([`build_id`]);
//! 3. the resolved address must fall inside an executable segment of the
//!    object that contains the anchor ([`resolve`]).

use crate::{panic, Error, Payload, Task};
use serde::{Deserialize, Serialize};
use std::any::{Any, TypeId};
use std::sync::OnceLock;

/// What a trampoline does: decode the arguments, call, append the encoded output.
pub(crate) type Trampoline = fn(args: &[u8], out: &mut Vec<u8>) -> Result<(), WireError>;

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
    postcard::to_io(value, &mut *out)
        .map(|_| ())
        .map_err(|e| Error::Codec {
            type_name: std::any::type_name::<T>().to_string(),
            message: e.to_string(),
        })
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

/// Encodes owned arguments (see [`Encoded`]); same bytes as [`encode`].
pub(crate) fn encode_owned<T: serde::Serialize + 'static>(value: T) -> Result<Encoded, Error> {
    let mut slot = Some(value);
    let any: &mut dyn Any = &mut slot;
    let bytes = if let Some(v) = any.downcast_mut::<Option<Vec<u8>>>() {
        v.take()
    } else if let Some(t) = any.downcast_mut::<Option<(Vec<u8>,)>>() {
        t.take().map(|t| t.0)
    } else {
        None
    };
    let mut head = Vec::new();
    if let Some(body) = bytes {
        put_varint(&mut head, body.len() as u64);
        return Ok(Encoded { head, body });
    }
    if let Some(value) = slot {
        encode(&value, &mut head)?;
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
        let body = bytes
            .get(at..)
            .filter(|b| b.len() as u64 == len)
            .ok_or_else(|| codec_error(format!("expected {len} bytes of data")))?;
        let mut owned = Vec::new();
        reserve_large(&mut owned, body.len());
        owned.extend_from_slice(body);
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

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

/// The trampoline offset for calls of `F` with `Args`.
///
/// Fails to compile (post-monomorphisation) when `F` is not zero-sized, i.e.
/// a closure that captures something: such a call cannot be shipped.
pub(crate) fn trampoline_of<F, Args>() -> u64
where
    F: Task<Args>,
    Args: Payload,
    F::Output: Payload,
{
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "fanout: only fn items and non-capturing closures can run on a process or cluster \
             backend; this closure captures variables (pass them as arguments instead)"
        )
    };
    let t: Trampoline = run::<F, Args>;
    (t as usize).wrapping_sub(anchor_addr()) as u64
}

fn run<F, Args>(args: &[u8], out: &mut Vec<u8>) -> Result<(), WireError>
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
        // SAFETY: `F` is zero-sized — `trampoline_of`, the only place this
        // function's address is taken, asserts it at compile time — and a
        // zero-sized fn item or non-capturing closure has no bytes to be invalid.
        let f: F = unsafe { std::mem::zeroed() };
        let output = f.call(args);
        encode(&output, out)
    })
    .and_then(|encoded| encoded)
    .map_err(WireError::from)
}

/// A 16-byte identity of the running binary.
pub type BuildId = [u8; 16];

struct Image {
    build_id: BuildId,
    /// Executable address ranges of the object that contains the anchor.
    text: Vec<(usize, usize)>,
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

/// The trampoline at `offset`, if it falls inside this binary's code.
pub(crate) fn resolve(offset: u64) -> Result<Trampoline, String> {
    let addr = anchor_addr().wrapping_add(offset as usize);
    let image = image();
    if !image.text.iter().any(|&(lo, hi)| addr >= lo && addr < hi) {
        return Err(format!(
            "trampoline offset {offset:#x} points outside this binary's code"
        ));
    }
    // SAFETY: the sender computed `offset` from a `Trampoline` in a binary
    // with the same build id (checked by the caller before resolving), so
    // `addr` is that function in this process; it lies in executable text.
    Ok(unsafe { std::mem::transmute::<usize, Trampoline>(addr) })
}

#[derive(Default)]
struct Scan {
    build_id: Option<BuildId>,
    text: Vec<(usize, usize)>,
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
        if p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0 {
            scan.text.push((start, start + p.p_memsz as usize));
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
        let t = resolve(offset).expect("inside text");
        let mut args = Vec::new();
        encode(&(2i32, 3i32), &mut args).unwrap();
        let mut out = Vec::new();
        t(&args, &mut out).unwrap();
        assert_eq!(decode::<i32>(&out).unwrap(), 5);
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
        assert!(resolve(u64::MAX / 2).is_err());
        assert!(resolve(0u64.wrapping_sub(anchor_addr() as u64)).is_err());
    }

    #[test]
    fn build_id_is_stable_and_nonzero() {
        assert_eq!(build_id(), build_id());
        assert_ne!(build_id(), &BuildId::default());
    }
}
