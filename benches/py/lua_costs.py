"""Where a cluster round trip's Redis time goes.

Three measurements against a running loopback `redis-server` of your own:
`costs` and `path` reset its command statistics (`CONFIG RESETSTAT`) and
leave the scripts they loaded cached; `slowlog` restores the slow-log settings
and empties the log when done. The keys it makes (`lua_costs:*`) are
deleted.

* `costs`: the server-side time (INFO commandstats, µs per call) of an
  empty `EVALSHA` and of each command the cluster's scripts call most,
  each alone inside a script, so the difference to the empty script is
  what one `redis.call` of it costs.
* `path`: the server-side time of the two scripts on a short task's path,
  `submit` (one fresh quick task) and `finish_claim` (one finish, no
  claim), called as a round trip calls them: one call at a time, each
  task submitted, read by a group consumer and finished in turn, so Redis
  sleeps between calls as it does there ("cold"). Also `submit` pipelined
  100 at a time ("hot"), and the same task written by a `MULTI` of `XADD`
  and `HSET` instead of the script. Keys `lua_costs:*`, deleted after.
* `slowlog`: runs `examples/round_trip` (build it first) against the
  server with the slow log recording every command, then groups the log
  by command, and by script for `EVALSHA` (named after the constant of
  `src/cluster/protocol.rs` whose composed text hashes to it), per round
  trip.

    redis-server --port 6399 --save '' --appendonly no &
    cargo build --release --example round_trip
    python3 benches/py/lua_costs.py costs --port 6399
    python3 benches/py/lua_costs.py slowlog --port 6399 --samples 1000
    python3 benches/py/lua_costs.py path --port 6399 --calls 2000

The slow log adds its own cost to every command, so its durations are
higher than without it; compare them with each other, not with a bench.
Commands a script calls are logged on their own as well, and their time is
also inside their script's.
Needs the `redis` package (`pip install redis`).
"""

import argparse
import collections
import hashlib
import os
import re
import statistics
import subprocess
import sys

import redis

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CLUSTER = os.path.join(ROOT, "src", "cluster")

# One script constant of `protocol.rs`: `include_str!("lua/x.lua")`, or a
# `concat!` of those and string literals.
CONST = re.compile(r'pub\(crate\) const (\w+): &str = (concat!\((.*?)\)|include_str!\("[^"]+"\));', re.S)
PART = re.compile(r'include_str!\("([^"]+)"\)|"((?:[^"\\]|\\.)*)"')


def scripts():
    """The cluster's scripts by constant name, composed as `protocol.rs`
    composes them (read from it, so the two cannot drift apart)."""
    with open(os.path.join(CLUSTER, "protocol.rs")) as f:
        rust = f.read()
    out = {}
    for name, body, _ in CONST.findall(rust):
        if "include_str!" not in body:
            continue
        text = ""
        for path, literal in PART.findall(body):
            if path:
                with open(os.path.join(CLUSTER, path)) as f:
                    text += f.read()
            else:
                text += literal.encode().decode("unicode_escape")
        out[name.lower()] = text
    return out


def per_call(r, body, keys, n):
    sha = r.script_load(body)
    r.config_resetstat()
    for _ in range(n):
        r.evalsha(sha, len(keys), *keys)
    us, calls = evalsha_usec(r)
    return us / calls


def costs(r, n):
    k = ["lua_costs:s", "lua_costs:h", "lua_costs:k", "lua_costs:b"]
    r.delete(*k)
    r.xadd(k[0], {"a": "b"})
    r.xgroup_create(k[0], "g", "$")
    r.hset(k[1], mapping={"st": "q", "e": "1-0", "f": "x" * 40, "a": "y" * 16})
    r.set(k[2], "v")
    r.setbit(k[3], 1500, 1)
    rows = [
        ("empty script", "return 1", []),
        ("XREADGROUP (nothing new)", "redis.call('XREADGROUP','GROUP','g','c','COUNT',16,'STREAMS',KEYS[1],'0-0') return 1", k[:1]),
        ("XPENDING summary", "redis.call('XPENDING', KEYS[1], 'g') return 1", k[:1]),
        ("HMGET 14 fields", "redis.call('HMGET', KEYS[1], 'st','e','at','d','m','o','f','b','a','s','n','x','nc','tl') return 1", k[1:2]),
        ("HSET 4 fields", "redis.call('HSET', KEYS[1], 'st','r','o','w','d','t','at','1') return 1", k[1:2]),
        ("GET", "redis.call('GET', KEYS[1]) return 1", k[2:3]),
        ("GETBIT", "redis.call('GETBIT', KEYS[1], 77) return 1", k[3:4]),
        ("TIME", "redis.call('TIME') return 1", []),
        ("XADD + XTRIM MINID", "local id = redis.call('XADD', KEYS[1], '*', 'k', 's') redis.call('XTRIM', KEYS[1], 'MINID', id) return 1", k[:1]),
    ]
    with open(os.path.join(CLUSTER, "lua", "finish_claim.lua")) as f:
        body = f.read()
    defs = scripts()["finish_claim"].replace(body, "")
    rows.append(("finish_claim's function definitions only", defs + "\nreturn 1", []))
    print("| inside one script | µs per call (server) | minus empty script |")
    print("|---|---:|---:|")
    base = None
    for name, body, keys in rows:
        us = per_call(r, body, keys, n)
        if base is None:
            base = us
        print(f"| {name} | {us:.2f} | {us - base:.2f} |")
    r.delete(*k)


def evalsha_usec(r):
    e = r.info("commandstats").get("cmdstat_evalsha", {})
    return e.get("usec", 0), e.get("calls", 0)


def path(r, n):
    """Prints the µs per call of `submit` and `finish_claim` on a short
    task's path (see the module's docs), with arguments shaped as
    `examples/round_trip` sends them (a 10-byte call, a 70-byte result)."""
    ns, client = "{lua_costs}", "5a56ef98b2ac53a7"
    q, live, ev = f"{ns}:q", f"{ns}:live:{client}", f"{ns}:ev:{client}"
    lanes, fin = f"{ns}:q:lanes", f"{ns}:fin:{client}"

    def clear():
        for k in r.scan_iter(f"{ns}:*"):
            r.delete(k)

    clear()
    r.xgroup_create(q, "fanout", "$", mkstream=True)
    lv = "1796238040560:" + "d2" * 32
    r.set(live, lv, px=600000)
    r.xadd(ev, {"k": "i"})
    r.pexpire(ev, 600000)
    text = scripts()
    sub, fc = r.script_load(text["submit"]), r.script_load(text["finish_claim"])
    call = {"f": "748632", "b": "13a50b2ba86b52bb6b9e2a6d15c69abe", "a": b"\x00" * 10,
            "s": b"\x80" * 32, "n": "1", "nc": "e96d0180ac97d6dafbcd6942-c6"}

    def submit_args(tid):
        return (sub, 5, q, live, ev, lanes, f"{ns}:t:{tid}", "3", lv, "60000", "", "fanout",
                "1", "1", tid, call["f"], call["b"], call["a"], call["s"], call["n"], call["nc"], "0")

    def read_one():
        return r.xreadgroup("fanout", "w1", {q: ">"}, count=1)[0][1][0][0].decode()

    ids = iter(range(0x1000, 0x1000 + 4 * n))

    def task():
        seq = next(ids)
        return f"{client}.{seq:x}", seq

    rows = []
    # submit alone, cold: submit, read, then plain commands for the rest.
    r.config_resetstat()
    for _ in range(n):
        tid, _ = task()
        r.evalsha(*submit_args(tid))
        e = read_one()
        r.xack(q, "fanout", e)
        r.xdel(q, e)
        r.delete(f"{ns}:t:{tid}")
    us, calls = evalsha_usec(r)
    cold = us / calls
    rows.append(("submit, one fresh quick task (cold)", cold))
    # submit and finish_claim, cold: the second's share is the rest.
    r.config_resetstat()
    for _ in range(n):
        tid, seq = task()
        r.evalsha(*submit_args(tid))
        e = read_one()
        r.evalsha(fc, 6, q, q, f"{ns}:t:{tid}", f"{ns}:r:{tid}", ev, fin, "1", "fanout", "w1",
                  ns, "w1#1", lv, client, "0", e, "fanout", b"x" * 70, "3600", tid, str(seq),
                  "70", "0")
    us, calls = evalsha_usec(r)
    rows.append(("finish_claim, one finish, no claim (cold)", us / (calls / 2) - cold))
    left = r.xlen(q)
    # submit, hot: 100 per pipeline.
    r.config_resetstat()
    p = r.pipeline(transaction=False)
    for i in range(n):
        p.evalsha(*submit_args(task()[0]))
        if len(p) == 100 or i == n - 1:
            p.execute()
    us, calls = evalsha_usec(r)
    rows.append(("submit, one fresh quick task (hot: 100 per pipeline)", us / calls))
    r.delete(q)
    r.xgroup_create(q, "fanout", "$", mkstream=True)
    # The same task by MULTI (EXISTS, XADD, HSET), cold.
    r.config_resetstat()
    for _ in range(n):
        tid, _ = task()
        p = r.pipeline(transaction=True)
        p.exists(live, ev)
        p.xadd(q, dict(call, t=tid, q="1", tl="0"))
        p.hset(f"{ns}:t:{tid}", mapping=dict(call, m="3", st="p", at="0", e="0-1", tl="0", q="1"))
        p.execute()
        e = read_one()
        r.xack(q, "fanout", e)
        r.xdel(q, e)
        r.delete(f"{ns}:t:{tid}")
    st = r.info("commandstats")
    us = sum(st.get(f"cmdstat_{c}", {}).get("usec", 0) for c in ("multi", "exec"))
    rows.append(("MULTI of EXISTS, XADD, HSET for the same task (cold)", us / n))
    print(f"| call ({n} each) | µs per call (server) |")
    print("|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.2f} |")
    if left:
        print(f"(the queue kept {left} entries after the finishes: not the idle path)")
    clear()


def slowlog(r, port, samples):
    names = {hashlib.sha1(t.encode()).hexdigest(): n for n, t in scripts().items()}
    exe = os.path.join(ROOT, "target", "release", "examples", "round_trip")
    settings = ("slowlog-log-slower-than", "slowlog-max-len")
    old = {k: r.config_get(k)[k] for k in settings}
    r.config_set("slowlog-max-len", 1_000_000)
    r.config_set("slowlog-log-slower-than", 0)
    r.slowlog_reset()
    try:
        out = subprocess.run([exe, f"redis://127.0.0.1:{port}/0", str(samples), "1"],
                             capture_output=True, text=True, timeout=300, check=True)
    finally:
        r.config_set("slowlog-log-slower-than", old["slowlog-log-slower-than"])
    log = r.slowlog_get(1_000_000)
    r.slowlog_reset()
    r.config_set("slowlog-max-len", old["slowlog-max-len"])
    print(out.stdout.strip().splitlines()[-1], "(with the slow log on)")
    # The example's 400 warm-up calls go out together (a few script calls
    # in all), so per round trip is per sample, slightly high.
    trips = samples
    by = collections.defaultdict(list)
    for e in log:
        cmd = e["command"]
        cmd = cmd.decode("latin1") if isinstance(cmd, bytes) else cmd
        parts = cmd.split(" ")
        key = parts[0].upper()
        if key == "EVALSHA" and len(parts) > 1:
            key = "EVALSHA " + names.get(parts[1].lower(), parts[1][:8])
        by[key].append(e["duration"])
    print("| command | calls per round trip | median µs | µs per round trip |")
    print("|---|---:|---:|---:|")
    for k, v in sorted(by.items(), key=lambda kv: -sum(kv[1])):
        if k in ("SLOWLOG", "CONFIG"):
            continue
        print(f"| {k} | {len(v) / trips:.2f} | {statistics.median(v):.0f} | {sum(v) / trips:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["costs", "path", "slowlog"])
    ap.add_argument("--port", type=int, default=6399)
    ap.add_argument("--calls", type=int, default=20000, help="calls per row (costs, path)")
    ap.add_argument("--samples", type=int, default=1000, help="round trips (slowlog)")
    a = ap.parse_args()
    r = redis.Redis(host="127.0.0.1", port=a.port)
    if a.what == "costs":
        costs(r, a.calls)
    elif a.what == "path":
        path(r, a.calls)
    else:
        slowlog(r, a.port, a.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
