//! `weft-demo --init-only`: weft-init at work in a throw-away pod, step by step.
//!
//! Builds an isolated node (a network namespace with a bridge) and one pod on
//! it, runs `weft-init` in the pod, prints the resulting `iptables-save`,
//! connects from the "application" to a Service address and shows the
//! connection arriving on the proxy's outbound port with its original
//! destination, runs `weft-init validate`, then `weft-init --cleanup`.
//! Everything is removed when it ends.

use anyhow::{bail, Context, Result};
use weft_tests::{bin, connect, field, listen, Node, APP_UID, PROXY_UID, WAIT};

pub fn run() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod()?;
    println!(
        "== a pod: network namespace {} with {} and {}",
        pod.name, pod.ip, pod.ip6
    );

    step(&pod, "weft-init (default settings)", &[])?;
    println!("\n== iptables-save in the pod");
    print!("{}", pod.sh(&["iptables-save"])?);

    println!("\n== the proxy listens on 4140 as uid {PROXY_UID}; the app (uid {APP_UID}) connects to 10.96.0.20:80");
    let proxy = listen(&pod, PROXY_UID, "[::]:4140");
    let (ok, out) = connect(&pod, APP_UID, "10.96.0.20:80");
    for line in out.lines() {
        println!("app:   {line}");
    }
    if !ok {
        bail!("the connection was not redirected");
    }
    let line = proxy.expect_line("ACCEPTED", WAIT)?;
    println!("proxy: {line}");
    println!(
        "       original destination read with SO_ORIGINAL_DST: {}",
        field(&line, "orig")
    );
    drop(proxy);

    step(&pod, "weft-init validate", &["validate"])?;
    step(&pod, "weft-init --cleanup", &["--cleanup"])?;
    println!("\n== iptables-save -t nat after cleanup");
    print!("{}", pod.sh(&["iptables-save", "-t", "nat"])?);
    Ok(())
}

fn step(pod: &weft_tests::Pod, title: &str, args: &[&str]) -> Result<()> {
    println!("\n== {title}");
    let uid = (args.first() == Some(&"validate")).then_some(APP_UID);
    let out = pod
        .run(uid, &bin("weft-init"), args)
        .context("running weft-init")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("weft-init {args:?} failed");
    }
    Ok(())
}
