//! `weft-init validate` proves the redirect with a real connection, and says
//! which part failed when there is none.

use weft_tests::*;

fn validate(pod: &Pod, uid: u32, args: &[&str]) -> (Option<i32>, String, String) {
    let mut argv = vec!["validate", "--timeout-ms=1000"];
    argv.extend_from_slice(args);
    let out = pod.run(Some(uid), &bin("weft-init"), &argv).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

#[test]
fn validate_succeeds_with_the_rules() {
    if netns_or_skip("validate_ok") {
        return;
    }
    let node = Node::new().unwrap();
    let pod = node.pod().unwrap();
    install(&pod, &[]);
    let (code, out, err) = validate(
        &pod,
        APP_UID,
        &["--target=192.0.2.1:20001", "--target=[fd00:10:96::1]:20001"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("ok: a connection to 192.0.2.1:20001 was redirected to port 4140 with original destination 192.0.2.1:20001"), "{out}");
    assert!(
        out.contains("original destination [fd00:10:96::1]:20001"),
        "{out}"
    );
}

#[test]
fn validate_fails_clearly_without_the_rules() {
    if netns_or_skip("validate_fails") {
        return;
    }
    let node = Node::new().unwrap();
    let pod = node.pod().unwrap();

    let (code, _, err) = validate(&pod, APP_UID, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with(
            "weft-init: outbound traffic is not redirected: the connection to 192.0.2.1:20001"
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // Rules that lead somewhere else than the port validate holds.
    install(&pod, &["--outbound-port=5000"]);
    let (code, _, err) = validate(&pod, APP_UID, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("instead of arriving on port 4140"), "{err}");

    // The proxy's uid is never redirected: validate refuses to pretend.
    install(&pod, &[]);
    let (code, _, err) = validate(&pod, PROXY_UID, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the proxy's uid"), "{err}");

    // Something already holds the outbound port.
    let _squatter = listen(&pod, PROXY_UID, "0.0.0.0:4140");
    let (code, _, err) = validate(&pod, APP_UID, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot listen on 0.0.0.0:4140"), "{err}");
}
