use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";
const OWN: [u8; 8] = [0xaa, 0xbb, 0xcc, 0xdd, 0x11, 0x22, 0x33, 0x44];

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).unwrap()
}

fn get(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.to_str().unwrap().to_owned())
}

#[test]
fn w3c_valid_examples_of_the_specification() {
    let c = w3c(format!("00-{TRACE}-{SPAN}-01").as_bytes()).unwrap();
    assert_eq!(
        (hex(&c.trace_id), hex(&c.span_id)),
        (TRACE.into(), SPAN.into())
    );
    assert_eq!(c.sampling, Sampling::Sampled);
    let c = w3c(format!("00-{TRACE}-{SPAN}-00").as_bytes()).unwrap();
    assert_eq!(c.sampling, Sampling::NotSampled);
    // Flags masked, not compared: unknown bits ignored.
    assert_eq!(
        w3c(format!("00-{TRACE}-{SPAN}-09").as_bytes())
            .unwrap()
            .sampling,
        Sampling::Sampled
    );
    assert_eq!(
        w3c(format!("00-{TRACE}-{SPAN}-02").as_bytes())
            .unwrap()
            .sampling,
        Sampling::NotSampled
    );
    // A higher version: its first four fields, whatever follows a '-'.
    let future = format!("cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like");
    assert_eq!(w3c(future.as_bytes()).unwrap().sampling, Sampling::Sampled);
    assert!(w3c(format!("cc-{TRACE}-{SPAN}-01").as_bytes()).is_some());
}

#[test]
fn w3c_invalid_values_are_ignored() {
    for bad in [
        format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
        format!("00-{TRACE}-{}-01", SPAN.to_uppercase()),
        format!("00-{}-{SPAN}-01", "0".repeat(32)),
        format!("00-{TRACE}-{}-01", "0".repeat(16)),
        format!("ff-{TRACE}-{SPAN}-01"),
        format!("0G-{TRACE}-{SPAN}-01"),
        format!("00-{TRACE}-{SPAN}-0x"),
        // Version 00 is exactly 55 characters.
        format!("00-{TRACE}-{SPAN}-01-extra"),
        // A higher version: what follows must start with '-'.
        format!("cc-{TRACE}-{SPAN}-01.what"),
        format!("00-{}-{SPAN}-01", &TRACE[1..]),
        format!("00_{TRACE}_{SPAN}_01"),
        String::new(),
        "00".into(),
    ] {
        assert_eq!(w3c(bad.as_bytes()), None, "{bad:?}");
    }
}

#[test]
fn w3c_rewritten_with_the_proxy_span_as_parent_and_tracestate_untouched() {
    let mut h = headers(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-09")),
        ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ]);
    let c = extract(&h).unwrap();
    inject(&mut h, &c, OWN);
    assert_eq!(
        get(&h, "traceparent").unwrap(),
        format!("00-{TRACE}-aabbccdd11223344-01")
    );
    assert_eq!(
        get(&h, "tracestate").unwrap(),
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );
    // A higher version goes on as the version this proxy knows.
    let mut h = headers(&[("traceparent", &format!("cc-{TRACE}-{SPAN}-00-x"))]);
    let c = extract(&h).unwrap();
    inject(&mut h, &c, OWN);
    assert_eq!(
        get(&h, "traceparent").unwrap(),
        format!("00-{TRACE}-aabbccdd11223344-00")
    );
}

#[test]
fn b3_single_forms_and_their_sampling_states() {
    let c = b3_single(format!("{TRACE}-{SPAN}-1-05e3ac9a4f6e3b90").as_bytes()).unwrap();
    assert_eq!(
        (c.format, c.sampling),
        (Format::B3Single, Sampling::Sampled)
    );
    assert_eq!(hex(&c.span_id), SPAN);
    let c = b3_single(format!("{TRACE}-{SPAN}-d").as_bytes()).unwrap();
    assert_eq!(c.sampling, Sampling::Debug);
    assert!(c.sampling.sampled());
    let c = b3_single(format!("{TRACE}-{SPAN}-0").as_bytes()).unwrap();
    assert_eq!(c.sampling, Sampling::NotSampled);
    let c = b3_single(format!("{TRACE}-{SPAN}").as_bytes()).unwrap();
    assert_eq!(c.sampling, Sampling::Deferred);
    assert!(!c.sampling.sampled(), "deferred: no new decision here");
    // 64-bit trace ids are kept 64-bit.
    let c = b3_single(format!("a3ce929d0e0e4736-{SPAN}-1").as_bytes()).unwrap();
    assert!(c.short_id);
    for bad in [
        "0".to_owned(),
        TRACE.to_string(),
        format!("{TRACE}-{SPAN}-x"),
        format!("{TRACE}-{SPAN}-1-"),
        format!("{TRACE}-{SPAN}-1-{SPAN}-more"),
        format!("{}-{SPAN}-1", TRACE.to_uppercase()),
        format!("{}-{SPAN}-1", "0".repeat(32)),
        format!("{TRACE}-{}-1", "0".repeat(16)),
        format!("{TRACE}-{SPAN}-1-{}", "0".repeat(16)),
        format!("{}-{SPAN}-1", &TRACE[..20]),
    ] {
        assert_eq!(b3_single(bad.as_bytes()), None, "{bad:?}");
    }
}

#[test]
fn b3_single_rewritten_with_the_callers_span_as_parent() {
    for (sampling, out) in [
        ("-1", format!("{TRACE}-aabbccdd11223344-1-{SPAN}")),
        ("-d", format!("{TRACE}-aabbccdd11223344-d-{SPAN}")),
        ("-0", format!("{TRACE}-aabbccdd11223344-0-{SPAN}")),
        ("", format!("{TRACE}-aabbccdd11223344")),
    ] {
        let mut h = headers(&[("b3", &format!("{TRACE}-{SPAN}{sampling}"))]);
        let c = extract(&h).unwrap();
        inject(&mut h, &c, OWN);
        assert_eq!(get(&h, "b3").unwrap(), out);
    }
    let mut h = headers(&[("b3", &format!("a3ce929d0e0e4736-{SPAN}-1"))]);
    let c = extract(&h).unwrap();
    inject(&mut h, &c, OWN);
    assert_eq!(
        get(&h, "b3").unwrap(),
        format!("a3ce929d0e0e4736-aabbccdd11223344-1-{SPAN}")
    );
}

#[test]
fn b3_multi_header_sampled_deferred_denied_and_debug() {
    let base = [("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)];
    let with = |more: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        all.extend_from_slice(more);
        extract(&headers(&all)).unwrap()
    };
    assert_eq!(with(&[("x-b3-sampled", "1")]).sampling, Sampling::Sampled);
    assert_eq!(
        with(&[("x-b3-sampled", "true")]).sampling,
        Sampling::Sampled
    );
    assert_eq!(
        with(&[("x-b3-sampled", "0")]).sampling,
        Sampling::NotSampled
    );
    assert_eq!(with(&[]).sampling, Sampling::Deferred);
    assert_eq!(with(&[("x-b3-flags", "1")]).sampling, Sampling::Debug);
    assert_eq!(
        with(&[("x-b3-flags", "1"), ("x-b3-sampled", "0")]).sampling,
        Sampling::Debug,
        "debug implies accept"
    );
    assert_eq!(with(&[]).format, Format::B3Multi);
    let bad = headers(&[("x-b3-traceid", TRACE), ("x-b3-spanid", "xyz")]);
    assert_eq!(extract(&bad), None);
    let bad = headers(&[("x-b3-traceid", TRACE), ("x-b3-sampled", "1")]);
    assert_eq!(extract(&bad), None, "no span id");

    let mut h = headers(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", SPAN),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
    ]);
    let c = extract(&h).unwrap();
    inject(&mut h, &c, OWN);
    assert_eq!(get(&h, "x-b3-spanid").unwrap(), "aabbccdd11223344");
    assert_eq!(get(&h, "x-b3-parentspanid").unwrap(), SPAN);
    assert_eq!(get(&h, "x-b3-traceid").unwrap(), TRACE);
    assert_eq!(get(&h, "x-b3-sampled").unwrap(), "1");
}

#[test]
fn b3_single_wins_over_multi_and_w3c_over_both() {
    let other = "1234567890abcdef1234567890abcdef";
    let h = headers(&[
        ("b3", &format!("{TRACE}-{SPAN}-1")),
        ("x-b3-traceid", other),
        ("x-b3-spanid", SPAN),
    ]);
    let c = extract(&h).unwrap();
    assert_eq!(
        (c.format, hex(&c.trace_id)),
        (Format::B3Single, TRACE.into())
    );
    let h = headers(&[
        ("traceparent", &format!("00-{other}-{SPAN}-01")),
        ("b3", &format!("{TRACE}-{SPAN}-1")),
    ]);
    assert_eq!(extract(&h).unwrap().format, Format::W3c);
    // An invalid winner gives way to the next valid format.
    let h = headers(&[
        ("traceparent", "garbage"),
        ("b3", &format!("{TRACE}-{SPAN}-1")),
    ]);
    assert_eq!(extract(&h).unwrap().format, Format::B3Single);
}

#[test]
fn a_bare_deny_has_no_ids_and_forbids_a_new_trace() {
    assert!(denied(&headers(&[("b3", "0")])));
    assert_eq!(extract(&headers(&[("b3", "0")])), None);
    assert!(denied(&headers(&[("x-b3-sampled", "0")])));
    assert!(!denied(&headers(&[])));
    assert!(!denied(&headers(&[("b3", "1")])));
}

#[test]
fn a_root_context_is_a_sampled_w3c_one() {
    let mut h = HeaderMap::new();
    let trace = [7u8; 16];
    inject(&mut h, &root(trace, OWN), OWN);
    let c = extract(&h).unwrap();
    assert_eq!(
        (c.trace_id, c.span_id, c.sampling),
        (trace, OWN, Sampling::Sampled)
    );
}

#[test]
fn context_headers_are_found_in_one_pass_and_only_they() {
    for name in [
        "traceparent",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
    ] {
        let h = headers(&[("host", "web"), (name, "0"), ("accept", "*/*")]);
        assert_eq!(scan(&h), Seen::Other, "{name}");
    }
    for name in ["tracestate", "b4", "traceparents", "x-b3", "x-b2-traceid"] {
        let h = headers(&[("host", "web"), (name, "0")]);
        assert_eq!(scan(&h), Seen::Nothing, "{name}");
        assert_eq!(extract(&h), None, "{name}");
    }
    assert_eq!(scan(&HeaderMap::new()), Seen::Nothing);
    // A sole valid traceparent is read by the pass, as `extract` reads it.
    let tp = format!("00-{TRACE}-{SPAN}-01");
    let h = headers(&[("host", "web"), ("traceparent", &tp)]);
    assert_eq!(scan(&h), Seen::W3c(extract(&h).unwrap()));
    // With B3 beside it, or a second one, `extract` decides.
    let h = headers(&[("traceparent", &tp), ("b3", "0")]);
    assert_eq!(scan(&h), Seen::Other);
    let mut h = headers(&[("traceparent", &tp)]);
    h.append("traceparent", HeaderValue::from_static("garbage"));
    assert_eq!(scan(&h), Seen::Other);
}

#[test]
fn a_sole_traceparent_is_rewritten_in_place_as_inject_would() {
    let tp = format!("00-{TRACE}-{SPAN}-01");
    let own = [0xab; 8];
    let mut fast = headers(&[("host", "web"), ("traceparent", &tp), ("accept", "*/*")]);
    let Seen::W3c(ctx) = scan(&fast) else {
        panic!("read by the pass")
    };
    rewrite_traceparent(&mut fast, &ctx, own);
    let mut slow = headers(&[("host", "web"), ("traceparent", &tp), ("accept", "*/*")]);
    let read = extract(&slow).unwrap();
    inject(&mut slow, &read, own);
    assert_eq!(fast, slow);
    assert_eq!(fast.len(), 3);
    assert_eq!(
        fast["traceparent"],
        format!("00-{TRACE}-abababababababab-01").as_str()
    );
}
