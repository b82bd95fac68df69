//! Inbound authorization: one function from the pod port's policy, the
//! client's verified mesh identity and the request's head to allow or deny.
//!
//! Today no policy exists yet ([`PortPolicy`] is empty) and everything is
//! allowed, as before the mesh; SMI TrafficTarget enforcement fills this in.

/// The inbound policy of one pod port, as the control plane will send it.
#[derive(Clone, Debug, Default)]
pub struct PortPolicy {}

/// Why a request or connection is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub &'static str);

/// Whether `client` (its verified mesh identity, `None` without mesh TLS)
/// may send `req` (`None`: an opaque TCP connection) to a port with
/// `policy`.
pub fn authorize<B>(
    policy: &PortPolicy,
    client: Option<&str>,
    req: Option<&http::Request<B>>,
) -> Result<(), Denied> {
    let _ = (policy, client, req);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_policy_everyone_is_allowed() {
        let policy = PortPolicy::default();
        let req = http::Request::get("/").body(()).unwrap();
        for client in [None, Some("spiffe://cluster.local/ns/a/sa/b")] {
            assert_eq!(authorize(&policy, client, Some(&req)), Ok(()));
            assert_eq!(authorize::<()>(&policy, client, None), Ok(()));
        }
    }
}
