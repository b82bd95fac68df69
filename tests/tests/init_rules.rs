//! weft-init's rule sets as iptables sees them: identical when applied twice,
//! gone without a trace after `--cleanup`, untouched by every kind of bad
//! input, on both the nft and the legacy back end, IPv4 and IPv6.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use weft_tests::*;

/// The rules of both families in `mode`, as `*-save` prints them.
fn snapshot(pod: &Pod, mode: &str) -> String {
    let v4 = pod.rules(&format!("iptables-{mode}-save")).unwrap();
    let v6 = pod.rules(&format!("ip6tables-{mode}-save")).unwrap();
    format!("{v4}---\n{v6}")
}

/// Rules that are not weft's, in three tables and both families, so that
/// cleanup has something to leave alone.
fn add_foreign_rules(pod: &Pod, mode: &str) {
    for tool in [format!("iptables-{mode}"), format!("ip6tables-{mode}")] {
        let t = tool.as_str();
        pod.sh(&[t, "-t", "nat", "-N", "APP_CHAIN"]).unwrap();
        pod.sh(&[
            t,
            "-t",
            "nat",
            "-A",
            "APP_CHAIN",
            "-p",
            "udp",
            "-j",
            "RETURN",
        ])
        .unwrap();
        pod.sh(&[
            t,
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-p",
            "udp",
            "-j",
            "APP_CHAIN",
        ])
        .unwrap();
        pod.sh(&[
            t, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9", "-j", "RETURN",
        ])
        .unwrap();
        pod.sh(&[
            t, "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
        ])
        .unwrap();
    }
}

fn lifecycle(mode: &str) {
    let node = Node::new().unwrap();
    let pod = node.pod().unwrap();
    add_foreign_rules(&pod, mode);
    let before = snapshot(&pod, mode);

    // No --iptables-mode: the back end that already holds rules is chosen.
    install(&pod, &[]);
    let once = snapshot(&pod, mode);
    assert_ne!(once, before);
    for line in [
        "-A PREROUTING -p tcp -j WEFT_INBOUND",
        "-A OUTPUT -p tcp -j WEFT_OUTBOUND",
        "-A WEFT_INBOUND -p tcp -m tcp --dport 4191 -j RETURN",
        "-A WEFT_INBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4143",
        "-A WEFT_OUTBOUND -m owner --uid-owner 2102 -j RETURN",
        "-A WEFT_OUTBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4140",
    ] {
        assert_eq!(
            once.matches(line).count(),
            2,
            "{line} once per family in\n{once}"
        );
    }
    let other = if mode == "nft" { "legacy" } else { "nft" };
    assert!(
        !pod.rules(&format!("iptables-{other}-save"))
            .unwrap()
            .contains("WEFT_"),
        "weft-init used the {other} back end, not the {mode} one in use"
    );

    install(&pod, &[]);
    assert_eq!(
        snapshot(&pod, mode),
        once,
        "applying twice changed the rules"
    );

    // A changed configuration replaces the old rule set instead of adding to it.
    install(&pod, &["--skip-outbound-ports=25"]);
    let changed = snapshot(&pod, mode);
    assert_eq!(
        changed.matches("-j WEFT_OUTBOUND\n").count(),
        2,
        "{changed}"
    );
    assert!(changed.contains("--dport 25 -j RETURN"));
    install(&pod, &[]);
    assert_eq!(snapshot(&pod, mode), once);

    let out = weft_init(&pod, &["--cleanup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        snapshot(&pod, mode),
        before,
        "cleanup did not restore the rules"
    );

    let out = weft_init(&pod, &["--cleanup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no weft rules to remove"));
    assert_eq!(snapshot(&pod, mode), before);
}

#[test]
fn apply_twice_is_identical_and_cleanup_restores_nft() {
    if netns_or_skip("lifecycle_nft") {
        return;
    }
    lifecycle("nft");
}

#[test]
fn apply_twice_is_identical_and_cleanup_restores_legacy() {
    if netns_or_skip("lifecycle_legacy") {
        return;
    }
    lifecycle("legacy");
}

#[test]
fn dry_run_prints_the_rule_set_and_changes_nothing() {
    if netns_or_skip("dry_run") {
        return;
    }
    let node = Node::new().unwrap();
    let pod = node.pod().unwrap();
    let before = snapshot(&pod, "nft");
    let out = weft_init(&pod, &["--dry-run", "--ipv6=false"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("*nat\n:WEFT_INBOUND - [0:0]"), "{printed}");
    assert!(
        printed.contains("-A OUTPUT -p tcp -j WEFT_OUTBOUND\nCOMMIT"),
        "{printed}"
    );
    assert!(!printed.contains("IPv6"), "{printed}");
    assert_eq!(snapshot(&pod, "nft"), before);
}

/// A directory of links to the real iptables tools, less or more broken.
fn fake_bin(name: &str, links: &[&str], failing: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for tool in links {
        symlink(which(tool).unwrap(), dir.join(tool)).unwrap();
    }
    for tool in failing {
        let path = dir.join(tool);
        std::fs::write(&path, "#!/bin/sh\necho 'simulated failure' >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

#[test]
fn bad_input_changes_nothing() {
    if netns_or_skip("bad_input") {
        return;
    }
    let node = Node::new().unwrap();
    let pod = node.pod().unwrap();
    add_foreign_rules(&pod, "nft");
    // Good state from an earlier run, which a bad run must keep.
    install(&pod, &["--skip-inbound-ports=8081"]);
    let before = snapshot(&pod, "nft");
    let init = bin("weft-init");
    let init = init.to_str().unwrap();

    let no_ip6 = fake_bin(
        "no-ip6",
        &["iptables-nft-save", "iptables-nft-restore"],
        &[],
    );
    let no_tools = fake_bin("no-tools", &[], &[]);
    let v6_fails = fake_bin(
        "v6-fails",
        &[
            "iptables-nft-save",
            "iptables-nft-restore",
            "ip6tables-nft-save",
        ],
        &["ip6tables-nft-restore"],
    );
    let path = |dir: &Path| format!("PATH={}", dir.display());

    let cases: Vec<(Vec<String>, &str, u8)> = vec![
        (vec![init.into(), "--skip-inbound-ports=70000".into()], "port 70000 is out of range 1-65535", 64),
        (vec![init.into(), "--skip-outbound-cidrs=10.0.0.0/33".into()], "'10.0.0.0/33' is not a CIDR: prefix length '33' must be 0-32", 64),
        (vec![init.into(), "--no-such-flag".into()], "unexpected argument '--no-such-flag'", 64),
        (vec![init.into(), "--inbound-port=4140".into()], "--inbound-port and --outbound-port are both 4140", 64),
        (vec!["env".into(), "WEFT_INIT_SKIP_OUTBOUND_PORTS=25,smtp".into(), init.into()], "'smtp' is not a port number", 64),
        (vec!["env".into(), path(&no_tools), init.into()], "iptables-restore not found in PATH", 1),
        (vec!["env".into(), path(&no_ip6), init.into(), "--iptables-mode=nft".into()], "ip6tables-restore not found in PATH: install the iptables package, or pass --ipv6=false", 1),
        (vec!["setpriv".into(), "--bounding-set=-net_admin".into(), "--inh-caps=-net_admin".into(), init.into()], "missing the NET_ADMIN capability", 1),
        // IPv4 is applied, then IPv6 fails: IPv4 is rolled back.
        (vec!["env".into(), path(&v6_fails), init.into(), "--iptables-mode=nft".into(), "--skip-outbound-ports=25".into()], "IPv6 (nft back end", 1),
    ];
    for (argv, expected, code) in cases {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &pod.name])
            .args(&argv)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(i32::from(code)), "{argv:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{argv:?}: not one line: {err}");
        assert!(err.starts_with("weft-init: "), "{argv:?}: {err}");
        assert!(
            err.contains(expected),
            "{argv:?}: expected {expected:?} in {err}"
        );
        assert_eq!(snapshot(&pod, "nft"), before, "{argv:?} changed the rules");
    }
    for dir in [no_ip6, no_tools, v6_fails] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
