//! Arguments of a task: one or more items, each length-prefixed.

/// Appends one item's encoded arguments to a task's argument blob.
pub(crate) fn push_item(blob: &mut Vec<u8>, item: &[u8]) {
    blob.extend_from_slice(&(item.len() as u32).to_le_bytes());
    blob.extend_from_slice(item);
}

/// Splits an argument blob into `count` items; `None` if it is malformed.
pub(crate) fn split_items(mut blob: &[u8], count: usize) -> Option<Vec<&[u8]>> {
    let mut items = Vec::with_capacity(count.min(blob.len() / 4 + 1));
    for _ in 0..count {
        let len = u32::from_le_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        items.push(blob.get(4..4 + len)?);
        blob = &blob[4 + len..];
    }
    blob.is_empty().then_some(items)
}
