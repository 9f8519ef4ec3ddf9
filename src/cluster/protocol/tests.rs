use super::*;
use crate::ship::WireError;

#[test]
fn task_ids_round_trip_and_reject_junk() {
    let id = task_id("0123456789abcdef", 0x2a);
    assert_eq!(parse_task_id(&id), Some(("0123456789abcdef", 42)));
    for bad in [
        "",
        "x.1",
        "0123456789abcdef.",
        "0123456789abcdef.zz",
        "{a}.1",
    ] {
        assert_eq!(parse_task_id(bad), None, "{bad}");
    }
}

#[test]
fn items_split_back() {
    let mut blob = Vec::new();
    push_item(&mut blob, b"abc");
    push_item(&mut blob, b"");
    assert_eq!(
        split_items(&blob, 2).unwrap(),
        vec![b"abc".as_slice(), b"".as_slice()]
    );
    assert!(split_items(&blob, 1).is_none());
    assert!(split_items(&blob, 3).is_none());
    assert!(split_items(&blob[..5], 1).is_none());
}

#[test]
fn signatures_bind_every_field() {
    let base = TaskSeal {
        namespace: "ns",
        task: "t",
        nonce: "n",
        trampoline: 1,
        build_id: "b",
        items: 1,
        args: b"a",
    };
    let s = sign_task(b"k", &base);
    assert!(verify_task(b"k", &base, &s));
    assert!(!verify_task(b"K", &base, &s));
    assert!(!verify_task(b"k", &base, &s[..31]));
    let variants = [
        TaskSeal {
            namespace: "other",
            ..base
        },
        TaskSeal { task: "u", ..base },
        TaskSeal { nonce: "m", ..base },
        TaskSeal {
            trampoline: 2,
            ..base
        },
        TaskSeal {
            build_id: "c",
            ..base
        },
        TaskSeal { items: 2, ..base },
        TaskSeal { args: b"b", ..base },
    ];
    for v in &variants {
        assert!(!verify_task(b"k", v, &s));
    }
}

#[test]
fn push_values_are_signed_and_bind_their_client() {
    let v = push_value(b"k", "ns", "c", "127.0.0.1:5", "tok");
    let (addr, token) = push_target(b"k", "ns", "c", v.as_bytes()).unwrap();
    assert_eq!(addr.to_string(), "127.0.0.1:5");
    assert_eq!(token, "tok");
    assert!(push_target(b"K", "ns", "c", v.as_bytes()).is_none());
    assert!(push_target(b"k", "ns", "d", v.as_bytes()).is_none());
    let forged = v.replace("127.0.0.1:5", "127.0.0.1:6");
    assert!(push_target(b"k", "ns", "c", forged.as_bytes()).is_none());
    assert!(push_target(b"k", "ns", "c", b"junk").is_none());
    assert!(push_target(b"k", "ns", "c", b"").is_none());
}

#[test]
fn liveness_values_expire_and_bind_their_client() {
    let v = live_value(b"k", "ns", "c", 1000);
    assert!(client_alive(b"k", "ns", "c", v.as_bytes(), 999));
    assert!(!client_alive(b"k", "ns", "c", v.as_bytes(), 1000));
    assert!(!client_alive(b"K", "ns", "c", v.as_bytes(), 0));
    assert!(!client_alive(b"k", "ns2", "c", v.as_bytes(), 0));
    assert!(!client_alive(b"k", "ns", "d", v.as_bytes(), 0));
    let forged = v.replacen("1000", "9000", 1);
    assert!(!client_alive(b"k", "ns", "c", forged.as_bytes(), 0));
    for junk in ["", ":", "x:y", "5:zz", "1000"] {
        assert!(!client_alive(b"k", "ns", "c", junk.as_bytes(), 0), "{junk}");
    }
}

#[test]
fn oversized_values_are_replaced_until_the_envelope_fits() {
    let mut outcome = Outcome::Ran {
        worker: "w".into(),
        items: vec![
            ItemOutcome::Value(vec![1; 10]),
            ItemOutcome::Value(vec![2; 2000]),
            ItemOutcome::Value(vec![3; 5]),
        ],
    };
    let sealed = outcome.seal_within(b"k", "t", 500);
    assert!(sealed.len() <= 500);
    let Ok(Outcome::Ran { items, .. }) = Outcome::open(b"k", "t", &sealed) else {
        panic!("does not open");
    };
    assert_eq!(items[0], ItemOutcome::Value(vec![1; 10]));
    assert!(
        matches!(&items[1], ItemOutcome::Failed(WireError::Codec { message, .. })
        if message.contains("2000 bytes") && message.contains("proto-max-bulk-len"))
    );
    assert_eq!(items[2], ItemOutcome::Value(vec![3; 5]));
}

#[test]
fn envelopes_round_trip_and_refuse_tampering() {
    let outcome = Outcome::Ran {
        worker: "cluster worker h:1".into(),
        items: vec![
            ItemOutcome::Value(vec![1, 2, 3]),
            ItemOutcome::Failed(WireError::Panicked {
                message: "boom".into(),
                location: None,
                backtrace: None,
            }),
            ItemOutcome::Skipped,
        ],
    };
    let sealed = outcome.seal(b"secret", "task");
    assert_eq!(Outcome::open(b"secret", "task", &sealed), Ok(outcome));
    assert!(Outcome::open(b"other", "task", &sealed).is_err());
    assert!(Outcome::open(b"secret", "task2", &sealed).is_err());
    let mut tampered = sealed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(Outcome::open(b"secret", "task", &tampered).is_err());
    for cut in 0..sealed.len() {
        assert!(Outcome::open(b"secret", "task", &sealed[..cut]).is_err());
    }
    let lost = Outcome::Lost {
        worker: "w".into(),
        status: "s".into(),
    };
    assert_eq!(Outcome::open(b"k", "t", &lost.seal(b"k", "t")), Ok(lost));
}

#[test]
fn random_bytes_come_from_the_os() {
    let a = random_bytes::<32>().unwrap();
    let b = random_bytes::<32>().unwrap();
    assert_ne!(a, b);
    assert_ne!(a, [0u8; 32]);
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redact("redis://user:pw@host:1/0"),
        "redis://user:***@host:1/0"
    );
    assert_eq!(redact("redis://host:1/0"), "redis://host:1/0");
}
