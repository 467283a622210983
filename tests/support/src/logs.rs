//! Where the logs of the code under test go: captured at WARN and shown only
//! for a failing test, or streamed live when `SCIM_TEST_LOG` asks for it
//! (`1` for WARN, any other value is used as the `RUST_LOG` filter, e.g.
//! `SCIM_TEST_LOG=debug`).

use tracing_subscriber::EnvFilter;

/// The filter of a captured log: the projection's retries and the auth
/// reloads log at WARN, which is what a failure usually needs.
pub(crate) const CAPTURED_FILTER: &str = "warn";

/// `Some(filter)` when the developer asked to see the logs live.
pub(crate) fn streamed_filter() -> Option<String> {
    match std::env::var("SCIM_TEST_LOG") {
        Ok(v) if v.is_empty() || v == "0" => None,
        Ok(v) if v == "1" => Some(CAPTURED_FILTER.to_string()),
        Ok(v) => Some(v),
        Err(_) => None,
    }
}

/// Installs a tracing subscriber for code under test that runs in the test
/// process (the operator tests run the controller in-process). It writes
/// through libtest's output capture, which threads spawned by the test (tokio's
/// workers) inherit, so a test's log is printed only if that test fails.
/// Every test may call it; the first call in a test binary installs it.
pub fn init_tracing() {
    match streamed_filter() {
        // io::stderr is not captured by libtest, so this streams.
        Some(f) => {
            let _ =
                tracing_subscriber::fmt().with_env_filter(EnvFilter::new(f)).with_writer(std::io::stderr).try_init();
        }
        None => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(CAPTURED_FILTER))
                .with_ansi(false)
                .with_test_writer()
                .try_init();
        }
    }
}
