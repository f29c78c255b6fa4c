//! A node never writes its peer channels' TLS session keys: started by a program with
//! SSLKEYLOGFILE set, it refuses to start and writes no key log. (A test binary of its
//! own: the environment is the whole process's.)

mod common;

use common::*;

#[tokio::test]
async fn a_node_started_with_sslkeylogfile_set_refuses_and_logs_no_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("ru");
    ok(&tamga()
        .args(["init", "--member", "RU", "--demo-identity", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--api", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--federation")
        .arg(example())
        .output()
        .expect("init runs"));
    let keys = dir.path().join("keys.log");
    std::env::set_var("SSLKEYLOGFILE", &keys);
    let config = tamga_config::NodeConfig::load(&data.join("node.toml")).expect("loads");
    let started = tamga_node::daemon::Node::start(config).await;
    let e = started.map(|_| ()).expect_err("refused");
    assert!(e.to_string().contains("SSLKEYLOGFILE"), "{e}");
    assert!(!keys.exists(), "no key log written");
}
