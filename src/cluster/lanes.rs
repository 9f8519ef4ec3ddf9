//! Lanes: one task stream per (priority, resources) pair in use, so workers
//! read the highest priority first and only what they can run.
//!
//! * The default lane (priority 0, no resources) is `{ns}:q`, as before;
//!   every other lane is `{ns}:q:<priority>:<needs>` (needs spelled
//!   `gpu=1,mem_gb=4`, sorted), with the same consumer group, registered in
//!   the hash `{ns}:lanes` (stream → `priority|needs`) by the submit script.
//! * A worker keeps the lane list (refreshed every [`REFRESH`]) and takes its
//!   next entry with the `take` script from the lanes it can run now, best
//!   first: highest priority, and among lanes of one priority the default
//!   lane first. It can run a lane when its advertised resources
//!   (`FANOUT_CLUSTER_RESOURCES="gpu=2,mem_gb=64"`) minus those in use by its
//!   running tasks cover the lane's needs. Blocking reads wait on the default
//!   lane only, so an idle worker notices a task in another lane within one
//!   read block (a quarter second).
//! * A task in a lane no worker can run stays pending (and cancellable)
//!   until a worker that can joins.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often a worker re-reads the lane list.
pub(super) const REFRESH: Duration = Duration::from_millis(200);

/// The hash that lists the lanes of a namespace.
pub(super) fn registry(keys_queue: &str) -> String {
    format!("{keys_queue}:lanes")
}

/// Named resource amounts, sorted by name.
pub(crate) type Needs = Vec<(String, u32)>;

/// A lane: its stream key and what it asks of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lane {
    pub(super) stream: String,
    pub(super) priority: i32,
    pub(super) needs: Needs,
}

/// Checks and sorts resource needs (names of letters, digits, `_`, `-`, `.`).
pub(crate) fn canonical(needs: &[(String, u32)]) -> crate::Result<Needs> {
    let mut out: HashMap<String, u32> = HashMap::new();
    for (name, amount) in needs {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !ok {
            return Err(crate::Error::invalid(format!(
                "the resource name {name:?} is not usable; use 1 to 64 letters, digits, \
                 '_', '-' or '.'"
            )));
        }
        if *amount > 0 {
            *out.entry(name.clone()).or_default() += amount;
        }
    }
    let mut v: Needs = out.into_iter().collect();
    v.sort();
    Ok(v)
}

/// `gpu=1,mem_gb=4`.
pub(crate) fn spell(needs: &[(String, u32)]) -> String {
    needs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `gpu=2,mem_gb=64` (the worker's advertisement, or a lane's needs).
pub(super) fn parse(text: &str) -> Result<Needs, String> {
    let mut needs = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, amount) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not name=amount"))?;
        let amount: u32 = amount
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the amount is not a whole number"))?;
        needs.push((name.trim().to_string(), amount));
    }
    canonical(&needs).map_err(|e| e.to_string())
}

/// The stream of the lane for (`priority`, `needs`) (`default` for 0, none),
/// and its registry entry (`None` for the default lane).
pub(super) fn lane_of(default: &str, priority: i32, needs: &[(String, u32)]) -> (String, String) {
    if priority == 0 && needs.is_empty() {
        return (default.to_string(), String::new());
    }
    let spelled = spell(needs);
    (
        format!("{default}:{priority}:{spelled}"),
        format!("{priority}|{spelled}"),
    )
}

/// Parses one registry entry.
pub(super) fn parse_lane(stream: &str, desc: &str) -> Option<Lane> {
    let (priority, needs) = desc.split_once('|')?;
    Some(Lane {
        stream: stream.to_string(),
        priority: priority.parse().ok()?,
        needs: parse(needs).ok()?,
    })
}

/// True when `free` covers `needs`.
pub(super) fn fits(free: &HashMap<String, u32>, needs: &[(String, u32)]) -> bool {
    needs
        .iter()
        .all(|(k, v)| free.get(k).copied().unwrap_or(0) >= *v)
}

/// A worker's view of the lanes and of its resources.
pub(super) struct View {
    /// Every lane, default included; refreshed now and then.
    pub(super) lanes: Vec<Lane>,
    pub(super) refreshed: Option<Instant>,
    /// What the worker advertises.
    pub(super) total: HashMap<String, u32>,
    /// What its running tasks hold.
    pub(super) in_use: HashMap<String, u32>,
}

impl View {
    pub(super) fn new(default: &str, total: Needs) -> View {
        View {
            lanes: vec![Lane {
                stream: default.to_string(),
                priority: 0,
                needs: Vec::new(),
            }],
            refreshed: None,
            total: total.into_iter().collect(),
            in_use: HashMap::new(),
        }
    }

    pub(super) fn stale(&self) -> bool {
        self.refreshed.is_none_or(|t| t.elapsed() >= REFRESH)
    }

    /// Replaces the lane list with the registry's (`HGETALL` reply pairs).
    pub(super) fn update(&mut self, default: &str, pairs: Vec<(String, String)>) {
        let mut lanes = vec![Lane {
            stream: default.to_string(),
            priority: 0,
            needs: Vec::new(),
        }];
        lanes.extend(pairs.iter().filter_map(|(s, d)| parse_lane(s, d)));
        // Highest priority first; the default lane first within level 0
        // (stable sort, it is first in the list).
        lanes.sort_by_key(|l| std::cmp::Reverse(l.priority));
        self.lanes = lanes;
        self.refreshed = Some(Instant::now());
    }

    /// The lanes the worker can run now, best first.
    pub(super) fn runnable(&self) -> Vec<&Lane> {
        let free: HashMap<String, u32> = self
            .total
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(self.in_use.get(k).copied().unwrap_or(0)),
                )
            })
            .collect();
        self.lanes
            .iter()
            .filter(|l| fits(&free, &l.needs))
            .collect()
    }

    pub(super) fn hold(&mut self, needs: &[(String, u32)]) {
        for (k, v) in needs {
            *self.in_use.entry(k.clone()).or_default() += v;
        }
    }

    pub(super) fn release(&mut self, needs: &[(String, u32)]) {
        for (k, v) in needs {
            if let Some(used) = self.in_use.get_mut(k) {
                *used = used.saturating_sub(*v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_parse_sort_and_refuse_junk() {
        assert_eq!(
            parse("mem_gb=64, gpu=2").unwrap(),
            vec![("gpu".to_string(), 2), ("mem_gb".to_string(), 64)]
        );
        assert!(parse("gpu").is_err());
        assert!(parse("gpu=x").is_err());
        assert!(parse("g{u=1").is_err());
        assert_eq!(spell(&parse("b=1,a=2").unwrap()), "a=2,b=1");
    }

    #[test]
    fn lanes_order_and_fit() {
        let mut v = View::new("{n}:q", parse("gpu=1").unwrap());
        v.update(
            "{n}:q",
            vec![
                ("{n}:q:-1:".into(), "-1|".into()),
                ("{n}:q:5:".into(), "5|".into()),
                ("{n}:q:0:gpu=1".into(), "0|gpu=1".into()),
                ("{n}:q:9:gpu=2".into(), "9|gpu=2".into()),
            ],
        );
        let order: Vec<&str> = v.runnable().iter().map(|l| l.stream.as_str()).collect();
        assert_eq!(order, ["{n}:q:5:", "{n}:q", "{n}:q:0:gpu=1", "{n}:q:-1:"]);
        v.hold(&parse("gpu=1").unwrap());
        assert!(!v.runnable().iter().any(|l| l.stream == "{n}:q:0:gpu=1"));
        v.release(&parse("gpu=1").unwrap());
        assert!(v.runnable().iter().any(|l| l.stream == "{n}:q:0:gpu=1"));
    }
}
