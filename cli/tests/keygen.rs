//! `muster keygen` as a user runs it: one line of base64 that the agent accepts as a key.

use muster_core::gossip::keyring::GossipKey;

fn keygen() -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster")).arg("keygen").output().unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn prints_a_fresh_32_byte_key_per_run() {
    let (first, second) = (keygen(), keygen());
    for out in [&first, &second] {
        let line = out.strip_suffix('\n').expect("ends with a newline");
        assert!(!line.contains('\n'), "one line: {out:?}");
        assert_eq!(GossipKey::from_base64(line).unwrap().as_bytes().len(), 32, "{line}");
    }
    assert_ne!(first, second);
}
