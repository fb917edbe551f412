//! What a test does when an external tool it drives (nginx, HAProxy, node,
//! chromium, python3 with grpcio) is missing: under `CI=true` (or `CI=1`)
//! it fails, because CI installs every tool and a silent skip would hide a
//! broken install; elsewhere it says what is missing and how to get it, and
//! skips.

/// Whether the tests run under CI (`CI=true` or `CI=1`).
#[must_use]
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The policy for a missing tool: `what` is missing, `fix` says how to get
/// it. Returns `None` (the test returns early) after printing
/// `SKIPPED: <what> (<fix>)` to stderr.
///
/// # Panics
///
/// Under CI, so that the test fails.
pub fn missing<T>(what: &str, fix: &str) -> Option<T> {
    if on_ci() {
        panic!("{what} is required under CI=true ({fix})");
    }
    eprintln!("SKIPPED: {what} ({fix})");
    None
}
