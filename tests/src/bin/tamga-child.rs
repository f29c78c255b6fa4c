//! The `tamga` binary, built inside the test package so that its integration tests can run
//! real node processes (`env!("CARGO_BIN_EXE_tamga-child")`) and kill them with SIGKILL.

fn main() {
    std::process::exit(tamga_node::cli::main());
}
