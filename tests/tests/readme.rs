//! The README's walkthrough and five-agent cluster blocks and the scripts CI runs (`tests/walkthrough.sh`,
//! `tests/cluster.sh`) must not drift apart: every line of each block appears verbatim.

#[test]
fn walkthrough_script_runs_the_readme_commands_verbatim() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let script = std::fs::read_to_string(root.join("tests/walkthrough.sh")).expect("walkthrough.sh");
    let section = readme.split("## Walkthrough").nth(1).expect("a Walkthrough section");
    let block = section.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    let commands: Vec<&str> =
        block.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(commands.len() >= 8, "the walkthrough has its steps: {commands:?}");
    for c in commands {
        assert!(script.contains(c), "README command missing from tests/walkthrough.sh: {c}");
    }
    assert!(
        script.contains("cargo run --release -p muster -- agent -dev"),
        "the script starts the agent as the README says"
    );
    assert!(
        readme.contains("cargo run --release -p muster -- agent -dev")
            && readme.contains("cargo test --workspace")
    );
}

#[test]
fn cluster_script_runs_the_readme_cluster_commands_verbatim() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let script = std::fs::read_to_string(root.join("tests/cluster.sh")).expect("cluster.sh");
    let section = readme.split("## A five-agent cluster").nth(1).expect("a cluster section");
    let section = section.split("\n## ").next().expect("the section ends");
    let blocks: Vec<&str> = section.split("```sh").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert_eq!(blocks.len(), 2, "three servers, then two agents joining by gossip");
    let lines: Vec<&str> =
        blocks.iter().flat_map(|b| b.lines()).map(str::trim).filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 16, "the cluster blocks have their steps: {lines:?}");
    for l in lines {
        assert!(script.contains(l), "README line missing from tests/cluster.sh: {l}");
    }
}
