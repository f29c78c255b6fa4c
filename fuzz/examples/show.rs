//! Shows what the file parsers say about one input, as each file of the example
//! federation (to read a `config_files` crash):
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example show -- fuzz/artifacts/config_files/crash-…
//! ```

use tamga_config::{Federation, NodeConfig, SourceFile};
use tamga_fuzz::{code, sources};

fn main() {
    let path = std::env::args().nth(1).expect("usage: show FILE");
    let bytes = std::fs::read(&path).expect("readable file");
    let Ok(text) = String::from_utf8(bytes) else {
        println!("not UTF-8: every parser refuses it when reading");
        return;
    };
    let node = SourceFile::new("nodes/fuzz.toml", text.as_str());
    println!("== as node.toml\n{:?}", NodeConfig::from_source(&node).map(|_| "loads"));
    let kz = code("KZ");
    let mut s = sources(kz);
    s.roster = SourceFile::new("roster.toml", text.as_str());
    println!("== as the roster\n{:?}", Federation::from_sources(&s, kz).map(|_| "loads"));
    let mut s = sources(kz);
    s.catalog = SourceFile::new("catalog.toml", text.as_str());
    println!("== as the catalog\n{:?}", Federation::from_sources(&s, kz).map(|_| "loads"));
    let mut s = sources(kz);
    s.agreements.push(SourceFile::new("agreements/fuzz.toml", text.as_str()));
    println!("== as another agreement\n{:?}", Federation::from_sources(&s, kz).map(|_| "loads"));
    let mut s = sources(kz);
    s.policy = SourceFile::new("policies/KZ.toml", text.as_str());
    println!("== as KZ's policy\n{:?}", Federation::from_sources(&s, kz).map(|_| "loads"));
}
