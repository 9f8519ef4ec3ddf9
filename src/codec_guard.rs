//! Serde calls made on the caller's side, with user panics contained.
//!
//! A `Serialize` or `Deserialize` impl (and the `Drop` of the value being
//! encoded) is user code. On the caller's side it runs inside `submit` or on
//! a backend's delivery thread; a panic escaping from there would unwind
//! into the caller of `submit`, or kill the thread that delivers every
//! result (whose futures then never resolve). These wrappers of
//! [`crate::ship`]'s codec turn such a panic into [`Error::Codec`] naming
//! the type and the panic message. Worker-side calls need no wrapper: the
//! trampoline already runs decode, call and encode inside `panic::catch`.

use crate::ship::{self, Encoded};
use crate::{panic, Error, Result};

pub(crate) fn panicked<T>(what: &str, error: Error) -> Error {
    let message = match error {
        Error::Panicked { message, .. } => message,
        other => other.to_string(),
    };
    Error::Codec {
        type_name: std::any::type_name::<T>().to_string(),
        message: format!("{what} panicked: {message}"),
    }
}

/// [`ship::encode`], with a panicking `Serialize` reported as `Codec`.
pub(crate) fn encode<T: serde::Serialize + 'static>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    panic::catch(|| ship::encode(value, out))
        .unwrap_or_else(|e| Err(panicked::<T>("serializing", e)))
}

/// [`ship::encode_owned`], with a panicking `Serialize` (or `Drop` of the
/// value) reported as `Codec`.
pub(crate) fn encode_owned<T: serde::Serialize + 'static>(value: T) -> Result<Encoded> {
    panic::catch(move || ship::encode_owned(value))
        .unwrap_or_else(|e| Err(panicked::<T>("serializing", e)))
}

/// [`ship::decode`], with a panicking `Deserialize` reported as `Codec`.
pub(crate) fn decode<T: serde::de::DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T> {
    panic::catch(|| ship::decode::<T>(bytes))
        .unwrap_or_else(|e| Err(panicked::<T>("deserializing", e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Grenade;

    impl serde::Serialize for Grenade {
        fn serialize<S: serde::Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
            panic!("pin pulled")
        }
    }

    impl<'de> serde::Deserialize<'de> for Grenade {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
            panic!("pin pulled on the way back")
        }
    }

    #[test]
    fn panics_become_codec_errors_naming_the_type() {
        let mut out = Vec::new();
        let e = encode(&Grenade, &mut out).unwrap_err();
        assert!(
            matches!(&e, Error::Codec { type_name, message }
                if type_name.contains("Grenade") && message.contains("pin pulled")),
            "{e:?}"
        );
        assert!(matches!(encode_owned(Grenade), Err(Error::Codec { .. })));
        let e = decode::<Grenade>(&[]).unwrap_err();
        assert!(
            matches!(&e, Error::Codec { message, .. } if message.contains("deserializing panicked")),
            "{e:?}"
        );
    }
}
