//! Fuzzes the decoder of the cluster's result envelopes (src/cluster/protocol/outcome.rs).
//!
//! A client reads envelopes from Redis, where anyone with write access could
//! put anything: the body decoder must refuse malformed input without
//! panicking or allocating without bound, a body that decodes must seal and
//! open again to the same outcome, and a whole envelope under the wrong (or
//! no) signature must never open.
#![no_main]

use fanout::__cluster_fuzz::{envelope_body, envelope_round_trip, open_envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(items) = envelope_body(data) {
        // Each item needs at least one byte of the body.
        assert!(items <= data.len());
        assert_eq!(envelope_round_trip(data), Some(true));
    }
    // Random bytes are not signed under the fuzz secret.
    assert!(!open_envelope(data));
});
