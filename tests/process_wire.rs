//! The frame decoder (`fanout::__wire::decode_frame`) on valid frames laid
//! out by hand from the format in `src/process/wire/mod.rs`, and on hostile
//! ones: every malformed frame is an error, never a panic or a huge
//! allocation. (The `frame_decoder` fuzz target in `fuzz/` explores further.)

use fanout::__wire::{decode_frame, Frame};

const BID: [u8; 16] = [7; 16];

fn task(items: &[(u64, &[u8])]) -> Vec<u8> {
    task_with(b"", items)
}

fn task_with(captures: &[u8], items: &[(u64, &[u8])]) -> Vec<u8> {
    let mut f = vec![1];
    f.extend_from_slice(&BID);
    f.extend_from_slice(&0xABCDu64.to_le_bytes());
    f.extend_from_slice(&(captures.len() as u32).to_le_bytes());
    f.extend_from_slice(captures);
    f.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (id, a) in items {
        f.extend_from_slice(&id.to_le_bytes());
        f.extend_from_slice(&(a.len() as u32).to_le_bytes());
        f.extend_from_slice(a);
    }
    f
}

fn done(items: &[(u64, u8, &[u8])]) -> Vec<u8> {
    let mut f = vec![10];
    f.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (id, tag, b) in items {
        f.extend_from_slice(&id.to_le_bytes());
        f.push(*tag);
        f.extend_from_slice(&(b.len() as u32).to_le_bytes());
        f.extend_from_slice(b);
    }
    f
}

/// postcard of `WireError::Refused { message: "no" }`.
const REFUSED_NO: &[u8] = &[2, 2, b'n', b'o'];

#[test]
fn valid_frames_decode() {
    match decode_frame(&task(&[(1, b"ab"), (2, b"")])).unwrap() {
        Frame::Task {
            build_id,
            trampoline,
            captures,
            items,
        } => {
            assert_eq!(build_id, BID);
            assert_eq!(trampoline, 0xABCD);
            assert_eq!(captures, b"");
            assert_eq!(items, vec![(1, &b"ab"[..]), (2, &b""[..])]);
        }
        other => panic!("{other:?}"),
    }
    match decode_frame(&task_with(b"cap", &[(1, b"ab")])).unwrap() {
        Frame::Task {
            captures, items, ..
        } => {
            assert_eq!(captures, b"cap");
            assert_eq!(items, vec![(1, &b"ab"[..])]);
        }
        other => panic!("{other:?}"),
    }
    match decode_frame(&done(&[(5, 0, b"xyz"), (6, 1, REFUSED_NO)])).unwrap() {
        Frame::Done { results } => {
            assert_eq!(results.len(), 2);
            assert_eq!(results[0], (5, Ok(&b"xyz"[..])));
            assert!(results[1].1.is_err());
        }
        other => panic!("{other:?}"),
    }
    let mut init = vec![2];
    init.extend_from_slice(&BID);
    init.extend_from_slice(&9u64.to_le_bytes());
    init.extend_from_slice(&1u32.to_le_bytes());
    init.push(7);
    init.extend_from_slice(&1u32.to_le_bytes());
    init.push(42);
    assert!(matches!(
        decode_frame(&init).unwrap(),
        Frame::Init {
            trampoline: 9,
            captures: [7],
            args: [42],
            ..
        }
    ));
    let mut failed = vec![11];
    failed.extend_from_slice(&(REFUSED_NO.len() as u32).to_le_bytes());
    failed.extend_from_slice(REFUSED_NO);
    assert!(matches!(
        decode_frame(&failed).unwrap(),
        Frame::InitFailed { .. }
    ));
    assert_eq!(decode_frame(&[12]).unwrap(), Frame::InitOk);
    assert!(decode_frame(&[12, 0]).is_err());
}

#[test]
fn hostile_frames_are_errors() {
    let good_task = task(&[(1, b"abcdef"), (2, b"gh")]);
    let good_bound = task_with(b"captures", &[(1, b"abcdef")]);
    let good_done = done(&[(5, 0, b"xyz"), (6, 1, REFUSED_NO)]);
    // Every strict prefix and every one-byte extension is an error.
    for good in [&good_task, &good_bound, &good_done] {
        for n in 0..good.len() {
            assert!(decode_frame(&good[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode_frame(&long).is_err());
    }
    // Unknown kind; unknown outcome tag; malformed error record.
    assert!(decode_frame(&[0]).is_err());
    assert!(decode_frame(&[255, 1, 2, 3]).is_err());
    assert!(decode_frame(&done(&[(1, 2, b"")])).is_err());
    assert!(decode_frame(&done(&[(1, 1, b"\xff\xff")])).is_err());
    // Counts and lengths far beyond the bytes present.
    let mut f = vec![10];
    f.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_frame(&f).is_err());
    let mut f = task(&[]);
    f[25..29].copy_from_slice(&u32::MAX.to_le_bytes()); // captures length
    assert!(decode_frame(&f).is_err());
    let mut f = task(&[]);
    f[29..33].copy_from_slice(&u32::MAX.to_le_bytes()); // item count
    assert!(decode_frame(&f).is_err());
    let mut f = task(&[(1, b"a")]);
    f[41..45].copy_from_slice(&u32::MAX.to_le_bytes()); // item length
    assert!(decode_frame(&f).is_err());
    let mut f = vec![11];
    f.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_frame(&f).is_err());
    // Every single-byte corruption of a valid frame decodes or errors, never panics.
    for good in [&good_task, &good_bound, &good_done] {
        for i in 0..good.len() {
            for b in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = decode_frame(&bad);
            }
        }
    }
}
