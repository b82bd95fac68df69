//! The values of flags and `weft.dev/` annotations: Go durations (proxy
//! and control plane), ports and port ranges and CIDRs (weft-init, and the
//! injector that checks the annotations that become its flags),
//! Kubernetes quantities and percentages, and a pod's annotations read
//! into an injection plan.

use std::collections::BTreeMap;
use weft_control::inject::{annotations, quantity, Settings};
use weft_init::cidr::Cidr;
use weft_init::ports::PortRange;

use crate::input::split_byte;

/// The first byte picks the parser (modulo 6), the rest is its text.
pub fn flags(data: &[u8]) {
    let (which, rest) = split_byte(data);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 6 {
        0 => duration(text),
        1 => port_range(text),
        2 => cidr(text),
        3 => quantity(text),
        4 => percent(text),
        _ => plan(text),
    }
}

/// Proxy and control plane read a duration alike; one never overflows
/// Go's range (i64 nanoseconds) and comes back equal from its own
/// nanoseconds.
fn duration(text: &str) {
    let proxy = weft_proxy::config::duration(text);
    let control = weft_control::config::duration(text);
    assert_eq!(proxy, control, "the proxy and the control plane disagree");
    let Ok(d) = proxy else { return };
    assert!(
        d.as_nanos() <= i64::MAX as u128,
        "{text:?} past Go's range: {d:?}"
    );
    let again = weft_proxy::config::duration(&format!("{}ns", d.as_nanos()));
    assert_eq!(again, Ok(d));
}

/// A range parses back from the form the injector writes it in, and
/// iptables' form (`first:last`) says the same range.
fn port_range(text: &str) {
    let Ok(r) = text.parse::<PortRange>() else {
        return;
    };
    assert!(1 <= r.first && r.first <= r.last);
    let shown = r.to_string().replace(':', "-");
    assert_eq!(shown.parse::<PortRange>(), Ok(r));
}

/// A CIDR's normal form parses to itself.
fn cidr(text: &str) {
    let Ok(c) = text.parse::<Cidr>() else {
        return;
    };
    let shown = c.to_string();
    let again = shown.parse::<Cidr>().expect("the normal form parses");
    assert_eq!(again, c);
    assert_eq!(again.to_string(), shown);
    assert_eq!(c.is_ipv4(), !shown.contains(':'));
}

/// A quantity is finite and not negative.
fn quantity(text: &str) {
    if let Ok(q) = quantity::parse(text) {
        assert!(q.is_finite() && q >= 0.0, "{text:?} read as {q}");
    }
}

fn percent(text: &str) {
    if let Ok(p) = weft_proxy::config::percent(text) {
        assert!((0.0..=100.0).contains(&p));
    }
}

/// `name=value` lines (the name without `weft.dev/`) as a pod's
/// annotations. A plan's lists are in weft-init's forms: each item
/// parses with its parser and is already in normal form.
fn plan(text: &str) {
    let pod: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("weft.dev/{k}"), v.to_owned()))
        .collect();
    let merged = annotations::merged(&BTreeMap::new(), &pod);
    let Ok(plan) = annotations::plan(&merged, &Settings::default()) else {
        return;
    };
    for item in plan
        .skip_inbound_ports
        .iter()
        .chain(&plan.skip_outbound_ports)
    {
        let r: PortRange = item.parse().expect("a planned port range parses");
        let written = if r.first == r.last {
            r.first.to_string()
        } else {
            format!("{}-{}", r.first, r.last)
        };
        assert_eq!(&written, item);
    }
    for item in &plan.skip_outbound_cidrs {
        let c: Cidr = item.parse().expect("a planned CIDR parses");
        assert_eq!(&c.to_string(), item);
    }
    assert!(plan.opaque_ports.iter().all(|p| *p > 0));
    if let Some(grace) = &plan.shutdown_grace {
        weft_control::config::duration(grace).expect("a planned grace parses");
    }
}
