//! Every row of the reference vectors in `tests/vectors/` (copied from the
//! shared vectors made with the reference protobuf library; see their
//! README): `classify.tsv` through [`classify`], `frames.tsv` through the
//! streaming [`FrameFilter`], fed whole and in every chunk size from 1 byte up.
//!
//! Failures are collected per row and reported together, each naming its row.

use std::path::PathBuf;

use inlinekeepalive_core::{classify, Classification, Encoding, FrameError, FrameFilter, Output};

/// Data rows in `classify.tsv` and `frames.tsv`: a truncated file fails.
const CLASSIFY_ROWS: usize = 53;
const FRAMES_ROWS: usize = 17;

struct Table {
    name: &'static str,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn load(name: &'static str) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("vectors")
            .join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut lines = text.split('\n').filter(|line| !line.is_empty());
        let header: Vec<String> = lines
            .next()
            .expect("header line")
            .split('\t')
            .map(str::to_owned)
            .collect();
        let rows: Vec<Vec<String>> = lines
            .map(|line| line.split('\t').map(str::to_owned).collect())
            .collect();
        for row in &rows {
            assert_eq!(row.len(), header.len(), "{name}: bad row {row:?}");
        }
        Self { name, header, rows }
    }

    fn column(&self, column: &str) -> usize {
        self.header
            .iter()
            .position(|c| c == column)
            .unwrap_or_else(|| panic!("{}: no column {column}", self.name))
    }
}

fn hex(cell: &str) -> Vec<u8> {
    hex::decode(cell).unwrap_or_else(|e| panic!("bad hex {cell:?}: {e}"))
}

fn report(table: &str, checked: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {checked} rows of {table} fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn classify_rows() {
    let table = Table::load("classify.tsv");
    assert_eq!(table.rows.len(), CLASSIFY_ROWS, "rows in classify.tsv");
    let (name, payload, expected) = (
        table.column("name"),
        table.column("payload_hex"),
        table.column("expected"),
    );
    let mut failures = Vec::new();
    for row in &table.rows {
        let want = match row[expected].as_str() {
            "KEEPALIVE" => Classification::Keepalive,
            "COLLISION" => Classification::Collision,
            "APPLICATION" => Classification::Application,
            other => panic!("{}: unknown class {other}", row[name]),
        };
        let got = classify(&hex(&row[payload]));
        if got != want {
            failures.push(format!("{}: expected {want:?}, got {got:?}", row[name]));
        }
    }
    report("classify.tsv", table.rows.len(), &failures);
}

/// How feeding a stream through the filter ended.
#[derive(Debug)]
struct Run {
    passed: Vec<u8>,
    result: Result<(), FrameError>,
}

/// Feeds `stream` in chunks of `size` bytes (the whole stream at once if
/// `size` is 0) and calls `finish` unless a step failed.
fn run(encoding: Encoding, stream: &[u8], size: usize) -> Run {
    let mut filter = FrameFilter::with_encoding(encoding);
    let mut passed = Vec::new();
    let chunks: Vec<&[u8]> = if size == 0 {
        vec![stream]
    } else {
        stream.chunks(size).collect()
    };
    for chunk in chunks {
        let mut input = chunk;
        loop {
            let step = match filter.step(input) {
                Ok(step) => step,
                Err(error) => {
                    return Run {
                        passed,
                        result: Err(error),
                    }
                }
            };
            assert!(
                input.is_empty() || step.consumed > 0,
                "no progress at chunk size {size}"
            );
            match step.output {
                Output::Forward(range) => passed.extend_from_slice(&input[range]),
                Output::Held(bytes) => passed.extend_from_slice(bytes),
                Output::Removed | Output::Nothing => {}
            }
            input = &input[step.consumed..];
            if input.is_empty() {
                break;
            }
        }
    }
    let result = filter.finish();
    Run { passed, result }
}

/// One frame of a test stream, split without the code under test.
struct RawFrame {
    compressed: bool,
    start: usize,
    end: usize,
}

/// Splits `stream` into whole frames; the second value is the offset of a
/// trailing incomplete or broken frame, if any.
fn split_frames(stream: &[u8]) -> (Vec<RawFrame>, Option<usize>) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let rest = &stream[pos..];
        if rest[0] > 1 || rest.len() < 5 {
            return (frames, Some(pos));
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if rest.len() - 5 < len {
            return (frames, Some(pos));
        }
        frames.push(RawFrame {
            compressed: rest[0] == 1,
            start: pos,
            end: pos + 5 + len,
        });
        pos += 5 + len;
    }
    (frames, None)
}

/// What the filter of a stream without gzip support must pass on: every
/// frame but the uncompressed keepalives, compressed ones untouched.
fn without_gzip(stream: &[u8]) -> Vec<u8> {
    let (frames, broken) = split_frames(stream);
    assert_eq!(broken, None, "needs-gzip rows are whole streams");
    let mut out = Vec::new();
    for f in frames {
        let frame = &stream[f.start..f.end];
        if f.compressed || classify(&frame[5..]) != Classification::Keepalive {
            out.extend_from_slice(frame);
        }
    }
    out
}

/// An uncompressed frame holding `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The frames of the messages that an error row's note says come out before
/// the break: `...; messages that come out before the error: 0801,0802` (or `-`).
fn frames_before_error(note: &str) -> Option<Vec<u8>> {
    const MARK: &str = "messages that come out before the error: ";
    let list = note[note.find(MARK)? + MARK.len()..].trim();
    if list == "-" {
        return Some(Vec::new());
    }
    Some(list.split(',').flat_map(|m| frame(&hex(m))).collect())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected<'a> {
    Output(&'a [u8]),
    Truncated,
    BadFlag,
}

/// Checks one row fed whole and in every chunk size from 1 byte up.
fn check_stream(
    name: &str,
    note: &str,
    encoding: Encoding,
    stream: &[u8],
    expected: Expected<'_>,
    failures: &mut Vec<String>,
) {
    let sizes = std::iter::once(0).chain(1..=stream.len());
    for size in sizes {
        let chunking = if size == 0 {
            "fed whole".to_owned()
        } else {
            format!("in chunks of {size}")
        };
        let mut fail = |what: String| {
            failures.push(format!("{name} ({encoding:?}, {chunking}): {what}"));
        };
        let got = run(encoding, stream, size);
        match expected {
            Expected::Output(want) => {
                if got.result != Ok(()) {
                    fail(format!("unexpected error {:?}", got.result));
                } else if got.passed != want {
                    fail(format!(
                        "passed {} instead of {}",
                        hex::encode(&got.passed),
                        hex::encode(want)
                    ));
                }
            }
            Expected::Truncated | Expected::BadFlag => {
                let kind_ok = matches!(
                    (expected, got.result),
                    (Expected::Truncated, Err(FrameError::Truncated { .. }))
                        | (Expected::BadFlag, Err(FrameError::BadFlag(_)))
                );
                if !kind_ok {
                    fail(format!("expected {expected:?}, got {:?}", got.result));
                    continue;
                }
                let Some(before) = frames_before_error(note) else {
                    fail("note lists no messages before the error".to_owned());
                    continue;
                };
                // Then at most a prefix of the broken frame, and only if it
                // is a long frame (forwarded as it arrives).
                let (_, broken) = split_frames(stream);
                let broken = &stream[broken.expect("error rows break")..];
                let long = broken.len() >= 5
                    && u32::from_be_bytes([broken[1], broken[2], broken[3], broken[4]]) > 64;
                let tail = got.passed.strip_prefix(before.as_slice());
                let ok = match tail {
                    Some([]) => true,
                    Some(tail) => long && broken.starts_with(tail),
                    None => false,
                };
                if !ok {
                    fail(format!(
                        "passed {} before the error; expected the frames {} then at most a \
                         prefix of the broken long frame",
                        hex::encode(&got.passed),
                        hex::encode(&before)
                    ));
                }
            }
        }
    }
}

#[test]
fn frames_rows_at_every_chunk_size() {
    let table = Table::load("frames.tsv");
    assert_eq!(table.rows.len(), FRAMES_ROWS, "rows in frames.tsv");
    let (name, stream_col, output, note) = (
        table.column("name"),
        table.column("stream_hex"),
        table.column("expected_output_hex"),
        table.column("note"),
    );
    let mut failures = Vec::new();
    for row in &table.rows {
        let (name, note) = (row[name].as_str(), row[note].as_str());
        let stream = hex(&row[stream_col]);
        let want_bytes;
        let expected = match row[output].as_str() {
            "ERROR:truncated" => Expected::Truncated,
            "ERROR:bad-flag" => Expected::BadFlag,
            "-" => Expected::Output(&[]),
            cell => {
                want_bytes = hex(cell);
                Expected::Output(&want_bytes)
            }
        };
        if note.contains("needs-gzip") {
            check_stream(name, note, Encoding::Gzip, &stream, expected, &mut failures);
            // Told nothing about gzip, the filter passes compressed frames on untouched.
            let untouched = without_gzip(&stream);
            let identity = Expected::Output(&untouched);
            check_stream(
                name,
                note,
                Encoding::Identity,
                &stream,
                identity,
                &mut failures,
            );
            assert!(
                split_frames(&stream).0.iter().any(|f| f.compressed),
                "{name}: a needs-gzip row has a compressed frame"
            );
        } else {
            // No compressed frame: the encoding must not matter.
            for encoding in [Encoding::Identity, Encoding::Gzip] {
                check_stream(name, note, encoding, &stream, expected, &mut failures);
            }
        }
    }
    report("frames.tsv", table.rows.len(), &failures);
}

#[test]
fn needs_gzip_rows_really_differ_without_gzip() {
    // Guards the Identity half of the test above: for the row whose gzip frame
    // is a keepalive, Identity must pass more bytes than Gzip.
    let table = Table::load("frames.tsv");
    let (name, stream_col, output) = (
        table.column("name"),
        table.column("stream_hex"),
        table.column("expected_output_hex"),
    );
    let row = table
        .rows
        .iter()
        .find(|row| row[name] == "gzip_keepalive_removed")
        .expect("row gzip_keepalive_removed");
    let stream = hex(&row[stream_col]);
    let identity = run(Encoding::Identity, &stream, 0);
    assert_eq!(identity.result, Ok(()));
    assert_eq!(identity.passed, stream, "nothing removed without gzip");
    assert_ne!(identity.passed, hex(&row[output]));
}
