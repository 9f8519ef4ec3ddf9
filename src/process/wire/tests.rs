use super::*;
use crate::ship::{Callee, Encoded};
use std::sync::Arc;

fn join(pieces: &[Piece]) -> Vec<u8> {
    pieces
        .iter()
        .flat_map(|p| p.bytes().iter().copied())
        .collect()
}

fn body(buf: &[u8]) -> &[u8] {
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    assert_eq!(len, buf.len() - 4);
    &buf[4..]
}

#[test]
fn task_round_trip() {
    let big = vec![9u8; SHARE_AT + 1];
    let items = vec![
        (
            1,
            0,
            Arc::new(Encoded {
                head: b"abc".to_vec(),
                body: Vec::new(),
            }),
        ),
        (2, 0, Arc::new(Encoded::default())),
        (
            3,
            0,
            Arc::new(Encoded {
                head: vec![1],
                body: big.clone(),
            }),
        ),
    ];
    let buf = join(&task_frame(&[7; 16], &Callee::plain(0x1234), &items));
    let mut third = vec![1];
    third.extend_from_slice(&big);
    assert_eq!(
        decode_frame(body(&buf)).unwrap(),
        Frame::Task {
            build_id: [7; 16],
            trampoline: 0x1234,
            captures: &[],
            items: vec![(1, &b"abc"[..]), (2, &b""[..]), (3, &third[..])]
        }
    );
    // Captures, small (inline) and large (a piece of their own), once per frame.
    for captures in [b"xyz".to_vec(), vec![5u8; SHARE_AT + 3]] {
        let callee = Callee {
            trampoline: 9,
            captures: Arc::new(Encoded {
                head: captures.clone(),
                body: Vec::new(),
            }),
        };
        let buf = join(&task_frame(&[7; 16], &callee, &items[..2]));
        assert_eq!(
            decode_frame(body(&buf)).unwrap(),
            Frame::Task {
                build_id: [7; 16],
                trampoline: 9,
                captures: &captures,
                items: vec![(1, &b"abc"[..]), (2, &b""[..])]
            }
        );
    }
}

#[test]
fn a_chunk_is_its_records_between_single_calls() {
    let mut records = Vec::new();
    for args in [&b"x"[..], &b""[..], &b"yz"[..]] {
        let n = push_record(&mut records, 8, |out: &mut Vec<u8>| {
            out.extend_from_slice(args);
            Ok::<(), ()>(())
        });
        assert_eq!(n, Ok(args.len()));
    }
    // A failed record leaves nothing behind.
    assert_eq!(
        push_record(&mut records, 8, |out: &mut Vec<u8>| {
            out.push(1);
            Err(())
        }),
        Err(())
    );
    let one = |head: &[u8]| {
        Arc::new(Encoded {
            head: head.to_vec(),
            body: Vec::new(),
        })
    };
    let items = vec![(1, 0, one(b"a")), (8, 3, one(&records)), (9, 0, one(b"b"))];
    let buf = join(&task_frame(&[1; 16], &Callee::plain(5), &items));
    assert_eq!(
        decode_frame(body(&buf)).unwrap(),
        Frame::Task {
            build_id: [1; 16],
            trampoline: 5,
            captures: &[],
            items: vec![
                (1, &b"a"[..]),
                (8, &b"x"[..]),
                (8, &b""[..]),
                (8, &b"yz"[..]),
                (9, &b"b"[..])
            ]
        }
    );
}

#[test]
fn a_result_over_the_frame_limit_fails_only_its_own_item() {
    let mut w = FrameWriter::with_limit(Vec::new(), 400);
    w.begin_done();
    w.outcome(1, |out| {
        out.extend_from_slice(b"small");
        Ok(())
    });
    w.outcome(2, |out| {
        out.extend_from_slice(&[7u8; 1000]);
        Ok(())
    });
    w.outcome(3, |out| {
        out.extend_from_slice(b"also small");
        Ok(())
    });
    w.end();
    let buf = w.into_inner();
    assert!(buf.len() < 800, "the oversized body was dropped");
    let Frame::Done { results } = decode_frame(body(&buf)).unwrap() else {
        panic!("expected a DONE frame");
    };
    assert_eq!(results[0], (1, Ok(&b"small"[..])));
    match &results[1] {
        (2, Err(WireError::Codec { message, .. })) => {
            assert!(message.contains("1000 bytes"), "{message}")
        }
        other => panic!("expected a Codec error for item 2, got {other:?}"),
    }
    assert_eq!(results[2], (3, Ok(&b"also small"[..])));
}

#[test]
fn a_large_output_is_spliced_in_and_bounded_like_the_rest() {
    let big: Vec<u8> = (0..3000).map(|i| i as u8).collect();
    let mut w = FrameWriter::new(Vec::new());
    w.begin_done();
    w.outcome(1, |out| {
        out.extend_from_slice(b"small");
        Ok(())
    });
    w.outcome(2, |out| {
        out.extend_from_slice(b"pp");
        crate::process::spare::set_tail(big.clone());
        Ok(())
    });
    w.outcome(3, |out| {
        out.extend_from_slice(b"after");
        Ok(())
    });
    w.end();
    let spliced = w.into_parts();
    assert_eq!(spliced.tails.len(), 1);
    let buf: Vec<u8> = spliced.pieces().flatten().copied().collect();
    let mut second = b"pp".to_vec();
    second.extend_from_slice(&big);
    assert_eq!(
        decode_frame(body(&buf)).unwrap(),
        Frame::Done {
            results: vec![
                (1, Ok(&b"small"[..])),
                (2, Ok(&second[..])),
                (3, Ok(&b"after"[..]))
            ]
        }
    );
    // Not the frame's last bytes: it cannot be detached (for `cma`).
    assert!(spliced.detached().is_none());
    // The last output's tail detaches: lengths lose its bytes, and its
    // record keeps only what came before it.
    let mut w = FrameWriter::new(Vec::new());
    w.begin_done();
    w.outcome(6, |out| {
        out.extend_from_slice(b"first");
        Ok(())
    });
    w.outcome(7, |out| {
        out.extend_from_slice(b"pp");
        crate::process::spare::set_tail(big.clone());
        Ok(())
    });
    w.end();
    let spliced = w.into_parts();
    let (inline, tail) = spliced.detached().expect("a last tail detaches");
    assert_eq!(tail, &big[..]);
    assert_eq!(
        decode_frame(body(&inline)).unwrap(),
        Frame::Done {
            results: vec![(6, Ok(&b"first"[..])), (7, Ok(&b"pp"[..]))]
        }
    );
    // A tail set outside an outcome is not taken by the next one.
    let mut w = FrameWriter::new(Vec::new());
    w.begin_done();
    crate::process::spare::set_tail(big.clone());
    w.outcome(5, |out| {
        out.push(1);
        Ok(())
    });
    w.end();
    assert!(w.into_parts().tails.is_empty());
    // Over the limit, the spliced output fails its own item and is dropped.
    let mut w = FrameWriter::with_limit(Vec::new(), 400);
    w.begin_done();
    w.outcome(4, |out| {
        out.push(1);
        crate::process::spare::set_tail(big.clone());
        Ok(())
    });
    w.end();
    let spliced = w.into_parts();
    assert!(spliced.tails.is_empty());
    let buf: Vec<u8> = spliced.pieces().flatten().copied().collect();
    let Frame::Done { results } = decode_frame(body(&buf)).unwrap() else {
        panic!("expected DONE");
    };
    assert!(
        matches!(&results[0], (4, Err(WireError::Codec { message, .. })) if message.contains("3001 bytes"))
    );
}

#[test]
fn done_round_trip_with_error() {
    let mut w = FrameWriter::new(Vec::new());
    w.begin_done();
    w.outcome(5, |out| {
        out.extend_from_slice(b"ok");
        Ok(())
    });
    w.outcome(6, |out| {
        out.extend_from_slice(b"partial output is discarded");
        Err(WireError::Refused {
            message: "no".into(),
        })
    });
    w.end();
    let buf = w.into_inner();
    assert_eq!(
        decode_frame(body(&buf)).unwrap(),
        Frame::Done {
            results: vec![
                (5, Ok(&b"ok"[..])),
                (
                    6,
                    Err(WireError::Refused {
                        message: "no".into()
                    })
                )
            ]
        }
    );
}

/// A DONE frame of a result `b"ok"` (call 5), a refusal (call 6) and,
/// with `third`, an empty result (call 7).
fn done_frame(third: bool) -> Vec<u8> {
    let mut w = FrameWriter::new(Vec::new());
    w.begin_done();
    w.outcome(5, |out| {
        out.extend_from_slice(b"ok");
        Ok(())
    });
    w.outcome(6, |_| {
        Err(WireError::Refused {
            message: "no".into(),
        })
    });
    if third {
        w.outcome(7, |_| Ok(()));
    }
    w.end();
    w.into_inner()
}

#[test]
fn done_records_match_decode_frame() {
    let buf = done_frame(false);
    let Frame::Done { results } = decode_frame(body(&buf)).unwrap() else {
        panic!("expected DONE");
    };
    let done = done_records(body(&buf)).unwrap().unwrap();
    let walked: Vec<_> = done
        .records()
        .map(|(id, tag, bytes)| (id, outcome(tag, bytes)))
        .collect();
    assert_eq!(walked, results);
    assert!(done_records(&[STEAL]).unwrap().is_none());
    // The same checks as `decode_frame`.
    assert!(done_records(&[DONE, 255, 255, 255, 255, 0]).is_err());
    assert!(done_records(&body(&buf)[..body(&buf).len() - 1]).is_err());
    let mut long = body(&buf).to_vec();
    long.push(0);
    assert!(done_records(&long).is_err());
    let mut bad_tag = body(&buf).to_vec();
    bad_tag[1 + 4 + 8] = 7;
    assert!(done_records(&bad_tag).is_err());
    // An accepted body walks the same records again, unchecked.
    let again: Vec<_> = DoneRecords::accepted(body(&buf)).records().collect();
    assert_eq!(again, done.records().collect::<Vec<_>>());
}

/// The fuzz target's property on every truncation and every single-byte
/// change of a DONE frame (each byte set to a few values).
#[test]
fn done_readers_agree_on_damaged_frames() {
    let buf = done_frame(true);
    let good = body(&buf);
    for len in 0..=good.len() {
        assert_done_readers_agree(&good[..len]);
    }
    for at in 0..good.len() {
        for value in [0, 1, 2, 7, 0x7f, 0x80, 0xff] {
            let mut damaged = good.to_vec();
            damaged[at] = value;
            assert_done_readers_agree(&damaged);
        }
    }
}

#[test]
fn steal_and_returned_round_trip() {
    let mut w = FrameWriter::new(Vec::new());
    w.steal();
    let buf = w.into_inner();
    assert!(is_steal(body(&buf)));
    assert_eq!(decode_frame(body(&buf)).unwrap(), Frame::Steal);
    let mut w = FrameWriter::new(Vec::new());
    w.returned(&[7, 9]);
    let buf = w.into_inner();
    assert_eq!(
        decode_frame(body(&buf)).unwrap(),
        Frame::Returned { frames: vec![7, 9] }
    );
    assert!(decode_frame(&[RETURNED, 9, 0, 0, 0, 1]).is_err());
    let items = vec![(42, 0, Arc::new(Encoded::default()))];
    assert_eq!(
        task_first_id(body(&join(&task_frame(
            &[0; 16],
            &Callee::plain(1),
            &items
        )))),
        Some(42)
    );
}

#[test]
fn hostile_frames_are_errors() {
    assert!(decode_frame(&[]).is_err());
    assert!(decode_frame(&[99]).is_err());
    // DONE claiming 4 billion records in a short frame.
    assert!(decode_frame(&[DONE, 255, 255, 255, 255, 0]).is_err());
    // TASK with a truncated item.
    let items = vec![(
        1,
        0,
        Arc::new(Encoded {
            head: b"abcdef".to_vec(),
            body: Vec::new(),
        }),
    )];
    let buf = join(&task_frame(&[0; 16], &Callee::plain(1), &items));
    assert!(decode_frame(&body(&buf)[..body(&buf).len() - 2]).is_err());
    // Trailing garbage.
    let mut long = body(&buf).to_vec();
    long.push(0);
    assert!(decode_frame(&long).is_err());
}
