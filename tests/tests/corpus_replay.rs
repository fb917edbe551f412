//! Replays the checked-in fuzz corpora (`fuzz/corpus/<target>/*`) through the
//! same entry functions the fuzz targets call, so the ordinary `cargo test`
//! on stable covers every seed and every crash reproducer kept there.
//!
//! - `classify`: `inlinekeepalive_testkit::classify_differential`, against
//!   the prost-based oracle.
//! - `filter`: `inlinekeepalive_testkit::filter_against_reference`, against
//!   the reference deframer (which inflates with flate2).
//! - `machine`: `inlinekeepalive_testkit::drive_machine`, through the models
//!   of the send schedule and the peer watchdog.
//! - `codec`: `inlinekeepalive_testkit::codec_against_reference`, the
//!   adapters' `GrpcCodec` decoder against a reference deframer and the
//!   core's `FrameFilter`.
//!
//! A corpus directory without a replay entry here fails the test, so a new
//! fuzz target cannot go unreplayed.

use std::path::{Path, PathBuf};

use inlinekeepalive_testkit::classify::{classify_differential, oracle_classify};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// Calls `entry` on every file of `fuzz/corpus/<target>/` and returns how
/// many there were. A panic names the file.
fn replay(target: &str, entry: fn(&[u8])) -> usize {
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    for path in &files {
        let data = std::fs::read(path).expect("corpus file");
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            panic!("{target} corpus file {} fails", path.display());
        }
    }
    files.len()
}

/// The seeds alone number this many; fewer files means a lost corpus.
const MIN_SEEDS: [(&str, usize); 4] = [
    ("classify", 59),
    ("filter", 40),
    ("machine", 1),
    ("codec", 8),
];

#[test]
fn every_corpus_has_a_replay_entry() {
    let mut targets: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("fuzz/corpus")
        .map(|entry| entry.expect("directory entry"))
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    for target in targets {
        assert!(
            MIN_SEEDS.iter().any(|(known, _)| *known == target),
            "fuzz/corpus/{target} has no replay entry in tests/tests/corpus_replay.rs"
        );
    }
}

#[test]
fn classify_corpus() {
    let n = replay("classify", classify_differential);
    assert!(n >= MIN_SEEDS[0].1, "only {n} classify corpus files");
}

#[test]
fn filter_corpus() {
    let n = replay("filter", inlinekeepalive_testkit::filter_against_reference);
    assert!(n >= MIN_SEEDS[1].1, "only {n} filter corpus files");
}

#[test]
fn machine_corpus() {
    let n = replay("machine", inlinekeepalive_testkit::drive_machine);
    assert!(n >= MIN_SEEDS[2].1, "only {n} machine corpus files");
}

#[test]
fn codec_corpus() {
    let n = replay("codec", inlinekeepalive_testkit::codec_against_reference);
    assert!(n >= MIN_SEEDS[3].1, "only {n} codec corpus files");
}

#[test]
fn oracle_agrees_with_the_vectors_on_prost_depth_limit() {
    // The one place where the rule leaves room: group nesting. prost refuses
    // any field inside the 100th nested group, and so must the core.
    let keepalive = inlinekeepalive_core::wire::KEEPALIVE_MESSAGE;
    for depth in [99, 100, 101] {
        for inner in [&[][..], &[0x08, 0x00][..]] {
            let mut msg = vec![0x0b; depth];
            msg.extend_from_slice(inner);
            msg.extend(std::iter::repeat_n(0x0c, depth));
            msg.extend_from_slice(&keepalive);
            classify_differential(&msg);
        }
    }
    assert_eq!(
        oracle_classify(&keepalive),
        inlinekeepalive_core::Classification::Keepalive
    );
}
