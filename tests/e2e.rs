//! The end-to-end and CLI tests, built as one test binary.
//!
//! Each file beside this one is a module of it: one binary links the library and the test
//! dependencies once instead of once per file (19 files cost 19 links and 19 compilations of
//! tests/support, about four minutes of a clean CI build). Cargo's automatic test discovery
//! is off (`autotests = false`), so a new file in tests/ must be declared below; the test at
//! the end fails when one is not.

mod support;

mod access;
mod annotations;
mod auth;
mod cli;
mod client_address;
mod client_cert;
mod debug;
mod deploy;
mod edge;
mod gateway;
mod gateway_api;
mod grpc;
mod kube;
mod lifecycle;
mod live;
mod monitoring;
mod tls;
mod tracing;
mod walkthrough;

/// Every tests/*.rs file is a module here: with automatic discovery off, a forgotten one
/// would silently never run.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let root = std::fs::read_to_string(dir.join("e2e.rs")).unwrap();
    let declared: Vec<&str> = root
        .lines()
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(module) = name.strip_suffix(".rs") {
            if module != "e2e" && !declared.contains(&module) {
                missing.push(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "tests/e2e.rs does not declare: {missing:?}"
    );
}
