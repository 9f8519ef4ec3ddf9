//! Redis replies: reading strings, arrays, integers and stream entries.

/// The bytes of a string reply.
pub(crate) fn bytes(v: &redis::Value) -> Option<&[u8]> {
    match v {
        redis::Value::BulkString(b) => Some(b),
        redis::Value::SimpleString(s) => Some(s.as_bytes()),
        redis::Value::Okay => Some(b"OK"),
        _ => None,
    }
}

/// A string reply as text.
pub(crate) fn text(v: &redis::Value) -> Option<&str> {
    std::str::from_utf8(bytes(v)?).ok()
}

/// The elements of an array reply.
pub(crate) fn array(v: &redis::Value) -> Option<&[redis::Value]> {
    match v {
        redis::Value::Array(a) | redis::Value::Set(a) => Some(a),
        _ => None,
    }
}

/// An integer reply.
pub(crate) fn int(v: &redis::Value) -> Option<i64> {
    match v {
        redis::Value::Int(i) => Some(*i),
        _ => text(v)?.parse().ok(),
    }
}

/// One stream entry: its id and field/value pairs.
pub(crate) struct Entry<'a> {
    pub(crate) id: &'a str,
    pub(crate) fields: &'a [redis::Value],
}

impl<'a> Entry<'a> {
    /// The value of `name`, if present.
    pub(crate) fn field(&self, name: &str) -> Option<&'a [u8]> {
        self.fields
            .chunks(2)
            .find(|kv| kv.len() == 2 && bytes(&kv[0]) == Some(name.as_bytes()))
            .and_then(|kv| bytes(&kv[1]))
    }
}

/// The entries of a list of `[id, [field, value, ...]]` (as in `XRANGE`,
/// `XAUTOCLAIM`); a deleted entry (nil fields) comes with no fields.
pub(crate) fn entries(v: &redis::Value) -> Vec<Entry<'_>> {
    let Some(list) = array(v) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let e = array(e)?;
            let id = text(e.first()?)?;
            let fields = e.get(1).and_then(array).unwrap_or(&[]);
            Some(Entry { id, fields })
        })
        .collect()
}

/// The entries of an `XREAD`/`XREADGROUP` reply for a single stream (nil on timeout).
pub(crate) fn read_reply(v: &redis::Value) -> Vec<Entry<'_>> {
    match v {
        redis::Value::Array(streams) => streams
            .first()
            .and_then(array)
            .and_then(|s| s.get(1))
            .map(entries)
            .unwrap_or_default(),
        redis::Value::Map(streams) => streams
            .first()
            .map(|(_, list)| entries(list))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}
