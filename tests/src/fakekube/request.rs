//! What a request asks for: its path read as a Kubernetes API route, and its
//! query string decoded (`application/x-www-form-urlencoded`, as kube-rs
//! writes it with `form_urlencoded`, empty pairs included: `?&watch=true`).

/// Where a request goes.
#[derive(Debug, PartialEq)]
pub(crate) enum Route {
    /// `/version`
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/api/v1`, `/apis/{group}/{version}`
    Resources { group: String, version: String },
    /// A collection: list or watch, cluster-wide (`namespace: None`) or in one namespace.
    Collection { api: Api, namespace: Option<String> },
    /// One object.
    Object {
        api: Api,
        namespace: Option<String>,
        name: String,
    },
    /// Anything else: 404.
    Unknown,
}

/// The group, version and plural a URL names.
#[derive(Debug, PartialEq)]
pub(crate) struct Api {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) plural: String,
}

impl Route {
    /// Reads a request path (without its query).
    pub(crate) fn parse(path: &str) -> Route {
        let parts: Vec<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(decode)
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let (group, version, rest) = match parts.as_slice() {
            ["version"] => return Route::Version,
            ["api"] => return Route::CoreVersions,
            ["apis"] => return Route::Groups,
            ["api", v] => return Route::resources("", v),
            ["apis", g, v] => return Route::resources(g, v),
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return Route::Unknown,
        };
        let api = |plural: &str| Api {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
        };
        match rest {
            ["namespaces", ns, plural] => Route::Collection {
                api: api(plural),
                namespace: Some((*ns).to_owned()),
            },
            ["namespaces", ns, plural, name] => Route::Object {
                api: api(plural),
                namespace: Some((*ns).to_owned()),
                name: (*name).to_owned(),
            },
            [plural] => Route::Collection {
                api: api(plural),
                namespace: None,
            },
            [plural, name] => Route::Object {
                api: api(plural),
                namespace: None,
                name: (*name).to_owned(),
            },
            _ => Route::Unknown,
        }
    }

    fn resources(group: &str, version: &str) -> Route {
        Route::Resources {
            group: group.to_owned(),
            version: version.to_owned(),
        }
    }
}

/// A decoded query string.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes `a=1&b=x%2Cy`; empty pairs are skipped.
    pub(crate) fn parse(query: &str) -> Query {
        Query(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    /// The last value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `""` when it is absent.
    pub(crate) fn str(&self, key: &str) -> &str {
        self.get(key).unwrap_or("")
    }

    /// Whether `key` is `true` (or `1`).
    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// Percent-decoding, with `+` as a space.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let api = |g: &str, v: &str, p: &str| Api {
            group: g.into(),
            version: v.into(),
            plural: p.into(),
        };
        assert_eq!(Route::parse("/version"), Route::Version);
        assert_eq!(
            Route::parse("/api/v1/services"),
            Route::Collection {
                api: api("", "v1", "services"),
                namespace: None
            }
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces"),
            Route::Collection {
                api: api("", "v1", "namespaces"),
                namespace: None
            }
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/kube-system"),
            Route::Object {
                api: api("", "v1", "namespaces"),
                namespace: None,
                name: "kube-system".into()
            }
        );
        assert_eq!(
            Route::parse("/apis/discovery.k8s.io/v1/namespaces/a/endpointslices"),
            Route::Collection {
                api: api("discovery.k8s.io", "v1", "endpointslices"),
                namespace: Some("a".into())
            }
        );
        assert_eq!(
            Route::parse("/apis/split.smi-spec.io/v1alpha4/namespaces/a/trafficsplits/t"),
            Route::Object {
                api: api("split.smi-spec.io", "v1alpha4", "trafficsplits"),
                namespace: Some("a".into()),
                name: "t".into()
            }
        );
        assert_eq!(
            Route::parse("/apis/g/v1"),
            Route::Resources {
                group: "g".into(),
                version: "v1".into()
            }
        );
        assert_eq!(Route::parse("/healthz"), Route::Unknown);
        assert_eq!(
            Route::parse("/api/v1/namespaces/a/pods/p/log/x"),
            Route::Unknown
        );
    }

    #[test]
    fn queries() {
        let q = Query::parse("&watch=true&labelSelector=app%3Dweb%2Ctier+in+%28a%29&limit=5&x");
        assert!(q.flag("watch"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.get("limit"), Some("5"));
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(q.get("continue"), None);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
    }
}
