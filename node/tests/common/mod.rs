//! Helpers shared by the tests that run the real `tamga` binary.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// The `tamga` binary under test, without a `TAMGA_CONFIG` from the environment and
/// without colours.
pub fn tamga() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tamga"));
    c.env_remove("TAMGA_CONFIG").env("NO_COLOR", "1");
    c
}

/// The example federation.
pub fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example")
}

/// What a command printed on stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a command printed on stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the command succeeded without a panic; its stdout.
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}\n{}", stdout(o), stderr(o));
    assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
    stdout(o)
}

/// A child process (a `tamga run`), killed when dropped.
#[derive(Debug)]
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
