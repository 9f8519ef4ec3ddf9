//! The README's test command installs `redis-server` itself when it is
//! missing, and `.ci/run` keeps calling that command.
//!
//! Installing a package for real is not something a test can do, so the
//! install check runs `scripts/ensure-redis.sh` with a `PATH` holding only
//! stand-ins for `apt-get`, `sudo`, `id` and `systemctl` that record how they
//! were called (the stand-in `apt-get install` puts a `redis-server` on that
//! `PATH`, and "starts" the service, as the Debian package does).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shim(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs ensure-redis.sh with only the stand-ins on PATH; returns (status, log).
fn run_ensure(uid: u32, redis_present: bool) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path();
    let log = bin.join("log");
    let l = log.display();
    let b = bin.display();
    shim(bin, "id", &format!("echo {uid}"));
    shim(bin, "sudo", &format!("echo \"sudo $*\" >> {l}; \"$@\""));
    shim(
        bin,
        "apt-get",
        &format!(
            "echo \"apt-get $*\" >> {l}\n\
             if [ \"$1\" = install ]; then\n\
               printf '#!/bin/bash\\necho redis\\n' > {b}/redis-server; /bin/chmod +x {b}/redis-server\n\
               /usr/bin/touch {b}/service-active\n\
             fi"
        ),
    );
    shim(
        bin,
        "systemctl",
        &format!(
            "echo \"systemctl $*\" >> {l}\n\
             case \"$1\" in\n\
               is-active) [ -e {b}/service-active ] ;;\n\
               stop) /bin/rm -f {b}/service-active ;;\n\
             esac"
        ),
    );
    if redis_present {
        shim(bin, "redis-server", "echo redis");
    }
    let status = Command::new("/bin/bash")
        .arg(root().join("scripts/ensure-redis.sh"))
        .env_clear()
        .env("PATH", bin)
        .status()
        .unwrap();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    (status.success(), log)
}

#[test]
fn missing_redis_is_installed_with_sudo_and_the_started_service_is_stopped() {
    let (ok, log) = run_ensure(1000, false);
    assert!(ok, "ensure-redis failed; log:\n{log}");
    assert!(log.contains("sudo apt-get update"), "{log}");
    assert!(
        log.contains("sudo apt-get install -y -qq redis-server"),
        "{log}"
    );
    assert!(log.contains("sudo systemctl stop redis-server"), "{log}");
}

#[test]
fn as_root_no_sudo_is_used() {
    let (ok, log) = run_ensure(0, false);
    assert!(ok, "{log}");
    assert!(log.contains("apt-get install -y -qq redis-server"), "{log}");
    assert!(!log.contains("sudo"), "{log}");
}

#[test]
fn present_redis_installs_nothing() {
    let (ok, log) = run_ensure(1000, true);
    assert!(ok, "{log}");
    assert!(log.is_empty(), "nothing should run: {log}");
}

#[test]
fn the_readme_command_ensures_redis_and_ci_runs_that_command() {
    let test_sh = std::fs::read_to_string(root().join("scripts/test.sh")).unwrap();
    let ensure_at = test_sh
        .find("./scripts/ensure-redis.sh")
        .expect("scripts/test.sh calls scripts/ensure-redis.sh");
    let cargo_at = test_sh
        .find("cargo test")
        .expect("scripts/test.sh runs cargo test");
    assert!(
        ensure_at < cargo_at,
        "redis is ensured before the tests run"
    );
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.contains("./scripts/test.sh"),
        ".ci/run calls scripts/test.sh"
    );
    assert!(
        !ci.contains("apt-get"),
        ".ci/run leaves installing to the test command"
    );
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("./scripts/test.sh"));
}
