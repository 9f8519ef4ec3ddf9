-- A worker slot's tidy after finishes it sent as plain commands (see
-- `plain.rs`), which acknowledge their entries but cannot trim the queue.
-- KEYS: the default lane's stream. ARGV: the group, the newest entry the
-- slot acknowledged that way. Exact, as an idle worker's finish tidies:
-- everything done goes, up to the oldest pending entry, or with nothing
-- pending up to and including that newest entry.
tidy(KEYS[1], ARGV[1], true, nil, ARGV[2])
return 1
