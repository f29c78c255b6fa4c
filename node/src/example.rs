//! The example federation of `deploy/example`, built into the binary so that `tamga bench`
//! (and a newcomer's first run) work from the binary alone. DEMO ONLY: its roster lists
//! the published demo keys.

use std::path::Path;

macro_rules! files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../deploy/example/", $path)))),*]
    };
}

/// (relative path, contents) of every file of the example federation.
pub const FILES: &[(&str, &str)] = files!(
    "roster.toml",
    "catalog.toml",
    "agreements/sco-ipr-2012.toml",
    "agreements/sco-rms-2013.toml",
    "agreements/sco-energy-2008.toml",
    "agreements/ru-kz-enforcement.toml",
    "policies/CN.toml",
    "policies/KG.toml",
    "policies/KZ.toml",
    "policies/RU.toml",
    "policies/TJ.toml",
    "policies/UZ.toml",
    "policies/XS.toml",
);

/// Write the example federation into `dir` (which must exist).
pub fn write_to(dir: &Path) -> std::io::Result<()> {
    for (rel, text) in FILES {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, text)?;
    }
    Ok(())
}

/// Start `member`'s node on loopback (ports chosen by the system), with the example
/// federation's files in `dir/federation` and its data in `dir/node`: for measurements
/// and tests that need one real node. Returns the node and the federation's directory.
pub async fn start_node(
    dir: &Path,
    member: &str,
) -> anyhow::Result<(crate::daemon::Node, std::path::PathBuf)> {
    let files = dir.join("federation");
    std::fs::create_dir_all(&files)?;
    write_to(&files)?;
    let data = dir.join("node");
    crate::cli::create_node(&crate::cli::InitArgs {
        member: member.into(),
        data_dir: data.clone(),
        listen: "/ip4/127.0.0.1/tcp/0".into(),
        api: "127.0.0.1:0".into(),
        federation: Some(files.clone()),
        demo_identity: true,
        json: true,
    })?;
    let config =
        tamga_config::NodeConfig::load(&data.join("node.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((crate::daemon::Node::start(config).await?, files))
}

#[cfg(test)]
mod tests {
    /// The embedded copy lists every agreement and policy file of deploy/example.
    #[test]
    fn embedded_files_match_the_directory() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example");
        for sub in ["agreements", "policies"] {
            for entry in std::fs::read_dir(root.join(sub)).expect("lists") {
                let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
                let rel = format!("{sub}/{name}");
                assert!(super::FILES.iter().any(|(p, _)| *p == rel), "{rel} is not embedded");
            }
        }
    }
}
