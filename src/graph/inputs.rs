//! The inputs of one call, element by element, and the [`Ready`] form a
//! backend receives once every input is done.

use super::source::AnySource;
use crate::call::Input;
use crate::future::Reference;
use crate::{Error, Payload, Result};

/// A call whose inputs are all done: its argument bytes as pieces to be put
/// end to end (a postcard tuple is its elements' encodings end to end), each
/// piece a plain value encoded now or an input's result bytes, by reference.
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct Ready {
    pub(crate) parts: Vec<Reference>,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("parts", &self.parts.len())
            .finish()
    }
}

fn remote_here() -> Error {
    Error::invalid("internal: a remote input reached a backend that cannot read it")
}

impl Ready {
    /// The pieces as bytes (every piece must be bytes).
    fn bytes(&self) -> Result<Vec<&[u8]>> {
        self.parts
            .iter()
            .map(|p| match p {
                Reference::Bytes(b) => Ok(&b[..]),
                Reference::Remote(_) => Err(remote_here()),
            })
            .collect()
    }

    /// The whole argument encoding (every piece must be bytes).
    pub(crate) fn concat(&self) -> Result<Vec<u8>> {
        let parts = self.bytes()?;
        if let [one] = parts.as_slice() {
            return Ok(one.to_vec());
        }
        let mut out = Vec::new();
        crate::ship::reserve_large(&mut out, parts.iter().map(|p| p.len()).sum());
        for p in parts {
            out.extend_from_slice(p);
        }
        Ok(out)
    }

    /// Total length in bytes of the byte pieces.
    pub(crate) fn len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Reference::Bytes(b) => b.len(),
                Reference::Remote(_) => 0,
            })
            .sum()
    }

    /// Decodes the arguments (for backends that run calls in this process).
    pub(crate) fn decode<Args: Payload>(&self) -> Result<Args> {
        match self.bytes()?.as_slice() {
            [one] => crate::ship::decode(one),
            _ => crate::ship::decode(&self.concat()?),
        }
    }
}

/// The inputs of one call, element by element (a tuple of [`Input`]s).
#[doc(hidden)]
pub trait Inputs<Args>: Send + 'static {
    /// The arguments, when every input is a plain value; otherwise `Err(self)`.
    fn into_values(self) -> std::result::Result<Args, Self>
    where
        Self: Sized;

    /// The `Arg` inputs, in order.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn sources(&self) -> Vec<&dyn AnySource>;

    /// Encodes the plain values and takes the inputs' bytes by reference.
    #[doc(hidden)]
    fn ready(self) -> Result<Ready>
    where
        Self: Sized;
}

/// One element of the inputs.
pub(crate) trait Element {
    fn source(&self) -> Option<&dyn AnySource>;
    fn part(self) -> Result<Reference>;
}

impl<A: Payload> Element for Input<A> {
    fn source(&self) -> Option<&dyn AnySource> {
        match self {
            Input::Value(_) => None,
            Input::Arg(a) => {
                a.source.arm_as_payload();
                Some(&a.source)
            }
        }
    }

    fn part(self) -> Result<Reference> {
        match self {
            Input::Value(v) => super::encode_value(&v).map(Reference::Bytes),
            Input::Arg(a) => a.source.encoded_as_payload(),
        }
    }
}

macro_rules! impl_inputs {
    ($($arg:ident),*) => {
        impl<$($arg: Payload,)*> Inputs<($($arg,)*)> for ($(Input<$arg>,)*) {
            #[allow(non_snake_case, clippy::unused_unit, unreachable_patterns)]
            fn into_values(self) -> std::result::Result<($($arg,)*), Self> {
                match self {
                    ($(Input::Value($arg),)*) => Ok(($($arg,)*)),
                    other => Err(other),
                }
            }

            #[allow(non_snake_case, unused_mut)]
            #[allow(private_interfaces)]
            fn sources(&self) -> Vec<&dyn AnySource> {
                let ($($arg,)*) = self;
                let mut out: Vec<&dyn AnySource> = Vec::new();
                $(if let Some(s) = Element::source($arg) { out.push(s); })*
                out
            }

            #[allow(non_snake_case)]
            fn ready(self) -> Result<Ready> {
                let ($($arg,)*) = self;
                Ok(Ready { parts: vec![$(Element::part($arg)?),*] })
            }
        }
    };
}

impl_inputs!();
impl_inputs!(A1);
impl_inputs!(A1, A2);
impl_inputs!(A1, A2, A3);
impl_inputs!(A1, A2, A3, A4);
impl_inputs!(A1, A2, A3, A4, A5);
impl_inputs!(A1, A2, A3, A4, A5, A6);
impl_inputs!(A1, A2, A3, A4, A5, A6, A7);
impl_inputs!(A1, A2, A3, A4, A5, A6, A7, A8);

/// `Error` for an input that belongs to another executor.
pub(crate) fn foreign(input: u64) -> Error {
    Error::invalid(format!(
        "the Arg of future {input} comes from another executor; an Arg can only be passed \
         to a call on the executor that made its future (pass the value instead)"
    ))
}
