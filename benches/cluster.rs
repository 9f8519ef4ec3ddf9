//! Cluster benchmark (work in progress).
fn main() {}
