//! Runs the examples, so they cannot rot: each asserts its own success and
//! exits non-zero on failure.
//!
//! `cargo test` builds the examples whose features are enabled next to the
//! test binaries (`target/<profile>/examples/`); this runs those binaries.

use std::path::PathBuf;
use std::process::Command;

/// The example binary built by this `cargo test` run.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the whole suite (`cargo test -p inlinekeepalive --all-features`), \
         which builds the examples, not only `--test examples`",
        path.display()
    );
    path
}

fn run(name: &str) {
    let output = Command::new(example(name))
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "example {name} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("ok:"),
        "example {name} printed no success line:\n{stdout}"
    );
}

#[cfg(feature = "tokio")]
#[test]
fn custom_transport() {
    run("custom_transport");
}

#[cfg(all(feature = "smol", feature = "asynchronous-codec"))]
#[test]
fn smol_tcp() {
    run("smol_tcp");
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_tcp() {
    run("tokio_tcp");
}
