//! The floor under a cluster round trip on this machine: the same four hops
//! a fanout task makes (client → Redis → worker → Redis → client) with the
//! least Redis can do for them. The client `XADD`s to a queue stream, a
//! worker thread blocked in `XREADGROUP` gets it and `XADD`s an event, and
//! the client, blocked in `XREAD` on the event stream, gets that. No
//! scripts, no record, no lease, no signature, no result value.
//!
//! Modes: `plain` (the calling thread reads the event itself), `script`
//! (the worker's event is sent by a one-command Lua script, to price the
//! script call), `thread` (an event thread reads it and wakes the caller
//! through a channel, as fanout's client does), `pubsub` (as `thread`,
//! but the worker also `PUBLISH`es the event's id, in one pipeline with its
//! `XADD`, and the event thread, subscribed once, gets it without a new
//! `XREAD` per event: what a client whose events came by pub/sub, with the
//! stream kept for catching up after a reconnect, would pay), `direct`
//! (the worker writes one byte to a TCP socket of the client after its
//! read, then sends its event `XADD` pipelined with its next read; the
//! calling thread reads the socket: results pushed to the client, as
//! `src/cluster/push.rs` does) and `direct-thread` (as `direct`, but a
//! thread of the client reads the socket and wakes the caller). A second
//! argument after the sample count picks modes: `plain,direct`.
//!
//! ```text
//! redis-server --port 6399 --save '' --appendonly no &
//! cargo run --release --example streams_floor -- redis://127.0.0.1:6399/0 5000
//! ```
//!
//! Prints p50 and p99 per mode; compare with `examples/round_trip` in the
//! same minute (BENCHMARKS.md, "Cluster round trip: the floor"). It uses
//! the keys `floor:q` and `floor:ev` of the given database and deletes them.

use redis::{Commands, Connection, RedisResult, Value};
use std::time::{Duration, Instant};

const QUEUE: &str = "floor:q";
const EVENTS: &str = "floor:ev";

fn main() -> RedisResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5000);
    let client = redis::Client::open(url.as_str())?;
    let modes: Vec<String> = match args.get(2) {
        Some(m) => m.split(',').map(String::from).collect(),
        None => [
            "plain",
            "script",
            "thread",
            "pubsub",
            "direct",
            "direct-thread",
        ]
        .map(String::from)
        .to_vec(),
    };
    for mode in modes.iter().map(String::as_str) {
        let (p50, p99) = run(&client, mode, n)?;
        println!("{mode}: p50={p50} µs p99={p99} µs");
    }
    let mut conn = connect(&client)?;
    let _: () = conn.del(&[QUEUE, EVENTS])?;
    Ok(())
}

/// `n` round trips (after `n / 10` not counted); returns p50 and p99 in µs.
fn run(client: &redis::Client, mode: &str, n: usize) -> RedisResult<(u128, u128)> {
    let mut setup = connect(client)?;
    let _: () = setup.del(&[QUEUE, EVENTS])?;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(QUEUE)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut setup)?;
    let mut last: String = redis::cmd("XADD")
        .arg(EVENTS)
        .arg("*")
        .arg("k")
        .arg("i")
        .query(&mut setup)?;
    let script = mode == "script";
    let publish = mode == "pubsub";
    let direct = mode.starts_with("direct");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err)?;
    let addr = listener.local_addr().map_err(io_err)?;
    let mut worker_conn = connect(client)?;
    // The worker stops when the queue stream is deleted (its read fails) or
    // after a read that brought nothing for a second.
    let worker = std::thread::spawn(move || -> RedisResult<()> {
        if direct {
            return direct_worker(&mut worker_conn, addr);
        }
        loop {
            let v: Value = worker_read().query(&mut worker_conn)?;
            if let Value::Nil = v {
                return Ok(());
            }
            if script {
                let _: Value = redis::cmd("EVAL")
                    .arg("return redis.call('XADD', KEYS[1], '*', 'k', 'd')")
                    .arg(1)
                    .arg(EVENTS)
                    .query(&mut worker_conn)?;
            } else if publish {
                let _: Value = redis::pipe()
                    .cmd("XADD")
                    .arg(EVENTS)
                    .arg("*")
                    .arg("k")
                    .arg("d")
                    .cmd("PUBLISH")
                    .arg(EVENTS)
                    .arg("d")
                    .query(&mut worker_conn)?;
            } else {
                let _: Value = worker_conn.xadd(EVENTS, "*", &[("k", "d")])?;
            }
        }
    });
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut pushed = if direct {
        let (s, _) = listener.accept().map_err(io_err)?;
        s.set_nodelay(true).map_err(io_err)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io_err)?;
        Some(s)
    } else {
        None
    };
    let events = if mode == "direct-thread" {
        let mut s = pushed.take().expect("accepted");
        Some(std::thread::spawn(move || -> RedisResult<()> {
            use std::io::Read;
            let mut b = [0u8; 1];
            while s.read_exact(&mut b).is_ok() {
                if tx.send(()).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        }))
    } else if mode == "thread" {
        let mut conn = connect(client)?;
        let mut from = last.clone();
        Some(std::thread::spawn(move || -> RedisResult<()> {
            while let Some(id) = read_event(&mut conn, &from)? {
                from = id;
                if tx.send(()).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        }))
    } else if publish {
        let mut conn = connect(client)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || -> RedisResult<()> {
            let mut sub = conn.as_pubsub();
            sub.subscribe(EVENTS)?;
            let _ = ready_tx.send(());
            loop {
                let msg = sub.get_message()?;
                if msg.get_payload_bytes() == b"w" || tx.send(()).is_err() {
                    return Ok(());
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| no_event())?;
        Some(thread)
    } else {
        drop(tx);
        None
    };
    let mut submit = connect(client)?;
    let mut reader = connect(client)?;
    let warm = n / 10;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + warm {
        let t = Instant::now();
        let _: String = submit.xadd(QUEUE, "*", &[("t", i)])?;
        if let Some(s) = pushed.as_mut() {
            use std::io::Read;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).map_err(io_err)?;
        } else if events.is_some() {
            rx.recv_timeout(Duration::from_secs(5))
                .map_err(|_| no_event())?;
        } else {
            last = read_event(&mut reader, &last)?.ok_or_else(no_event)?;
        }
        if i >= warm {
            lat.push(t.elapsed().as_micros());
        }
    }
    let _: () = setup.del(QUEUE)?;
    let _ = worker.join();
    drop(rx);
    drop(pushed);
    if let Some(e) = events.filter(|_| !direct) {
        // It ends at its next event or read timeout.
        let _: String = setup.xadd(EVENTS, "*", &[("k", "w")])?;
        let _: i64 = setup.publish(EVENTS, "w")?;
        let _ = e.join();
    }
    lat.sort_unstable();
    Ok((lat[lat.len() / 2], lat[lat.len() * 99 / 100]))
}

fn io_err(e: std::io::Error) -> redis::RedisError {
    redis::RedisError::from(e)
}

/// The worker of the `direct` modes: after each read it writes one byte to
/// the client's socket, then sends its event `XADD` pipelined with its next
/// blocking read, as a fanout worker would that pushed results to the client
/// and kept the stream for catching up.
fn direct_worker(conn: &mut Connection, addr: std::net::SocketAddr) -> RedisResult<()> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).map_err(io_err)?;
    s.set_nodelay(true).map_err(io_err)?;
    let mut v: Value = worker_read().query(conn)?;
    loop {
        if let Value::Nil = v {
            return Ok(());
        }
        if s.write_all(b"d").is_err() {
            return Ok(());
        }
        let (_, next): (Value, Value) = redis::pipe()
            .cmd("XADD")
            .arg(EVENTS)
            .arg("*")
            .arg("k")
            .arg("d")
            .add_command(worker_read())
            .query(conn)?;
        v = next;
    }
}

/// The worker's blocking group read of one entry (a second at most).
fn worker_read() -> redis::Cmd {
    let mut c = redis::cmd("XREADGROUP");
    c.arg("GROUP")
        .arg("g")
        .arg("w")
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(1000)
        .arg("STREAMS")
        .arg(QUEUE)
        .arg(">");
    c
}

/// A connection whose reads give up after 10 s (the longest `BLOCK` here is
/// 5 s), so a Redis that stops answering ends the run instead of hanging it.
fn connect(client: &redis::Client) -> RedisResult<Connection> {
    let conn = client.get_connection()?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(conn)
}

fn no_event() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "no event within 5 s"))
}

/// The id of the next event after `from`, waiting up to 5 s (`None`: none came).
fn read_event(conn: &mut Connection, from: &str) -> RedisResult<Option<String>> {
    let reply: redis::streams::StreamReadReply = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(5000)
        .arg("STREAMS")
        .arg(EVENTS)
        .arg(from)
        .query(conn)?;
    Ok(reply
        .keys
        .into_iter()
        .flat_map(|k| k.ids)
        .map(|id| id.id)
        .last())
}
