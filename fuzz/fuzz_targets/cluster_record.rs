//! Fuzzes the decoders of what a cluster worker reads from a task record and
//! its stream entry (src/cluster/protocol/): the argument blob's items,
//! the task id, and the client's liveness value.
//!
//! Input layout: one byte for the item count (0..=255), then the blob; the
//! whole input is also tried as a task id and as a liveness value.
#![no_main]

use fanout::__cluster_fuzz::{client_alive, parse_task_id, split_items};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&count, blob)) = data.split_first() {
        if let Some(items) = split_items(blob, count as usize) {
            assert_eq!(items.len(), count as usize);
            // Every item and its 4-byte length fit in the blob exactly.
            let total: usize = items.iter().map(|i| i.len() + 4).sum();
            assert_eq!(total, blob.len());
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some((client, _seq)) = parse_task_id(text) {
            assert_eq!(client.len(), 16);
            assert!(client.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
    // No liveness value can be forged without the secret.
    assert!(!client_alive(data, 0));
});
