//! The API server as `weft check` talks to it: the client (the current
//! kubeconfig context or in-cluster configuration, or an explicit URL), and
//! every call under one deadline, so that a hung API server gives a clear
//! error within `--timeout` rather than a hang.

use k8s_openapi::NamespaceResourceScope;
use kube::api::ListParams;
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// An object kube's typed `Api` reads (k8s-openapi's types).
pub trait Object: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug {}
impl<K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug> Object for K {}

/// An [`Object`] that lives in a namespace.
pub trait Namespaced: Object + kube::Resource<Scope = NamespaceResourceScope> {}
impl<K: Object + kube::Resource<Scope = NamespaceResourceScope>> Namespaced for K {}

/// Why a call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("{what}: no answer within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    /// 403: the caller may not.
    #[error("{what}: forbidden: {message}")]
    Forbidden { what: String, message: String },
    #[error("{what}: {message}")]
    Failed { what: String, message: String },
}

/// A client whose calls all end within `timeout`.
#[derive(Clone)]
pub struct Kube {
    pub client: Client,
    pub timeout: Duration,
    /// The API server's URL.
    pub server: String,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `e` and its sources: `client error (Connect): tcp connect error:
/// Connection refused (os error 111)`, not just the first.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

impl Kube {
    /// The client for `api_server` (a URL), else the kubeconfig's current
    /// context (`KUBECONFIG`, `~/.kube/config`) or the in-cluster
    /// configuration, with connect and read timeouts of `timeout`. Loading
    /// the configuration (an exec credential plugin, say) is bounded too.
    pub async fn connect(api_server: Option<&str>, timeout: Duration) -> Result<Self, String> {
        let config = match api_server {
            Some(url) => {
                let uri = url
                    .parse()
                    .map_err(|e| format!("--kube-api-server {url:?} is not a URL: {e}"))?;
                kube::Config::new(uri)
            }
            None => match tokio::time::timeout(timeout, kube::Config::infer()).await {
                Ok(Ok(config)) => config,
                Ok(Err(e)) => return Err(format!("no Kubernetes configuration: {e}")),
                Err(_) => {
                    return Err(format!(
                        "loading the Kubernetes configuration took more than {timeout:?}"
                    ))
                }
            },
        };
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned();
        let mut config = config;
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        config.reset_reader_on_write = true;
        let client = Client::try_from(config).map_err(|e| format!("cannot make a client: {e}"))?;
        Ok(Kube {
            client,
            timeout,
            server,
        })
    }

    /// `call`, ended after the timeout; `what` names it in errors.
    pub async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(CallError::Timeout {
                what: what.to_owned(),
                timeout: self.timeout,
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(kube::Error::Api(s))) if s.code == 403 => Err(CallError::Forbidden {
                what: what.to_owned(),
                message: s.message.clone(),
            }),
            Ok(Err(e)) => Err(CallError::Failed {
                what: what.to_owned(),
                message: with_causes(&e),
            }),
        }
    }

    /// The object `name` in `namespace`, `None` if there is none.
    pub async fn get<K>(&self, namespace: &str, name: &str) -> Result<Option<K>, CallError>
    where
        K: Namespaced,
    {
        let api = Api::<K>::namespaced(self.client.clone(), namespace);
        let what = format!("get {} {namespace}/{name}", K::kind(&()));
        self.call(&what, api.get_opt(name)).await
    }

    /// The cluster-scoped object `name`, `None` if there is none.
    pub async fn get_cluster<K>(&self, name: &str) -> Result<Option<K>, CallError>
    where
        K: Object,
    {
        let api = Api::<K>::all(self.client.clone());
        let what = format!("get {} {name}", K::kind(&()));
        self.call(&what, api.get_opt(name)).await
    }

    /// Every object of `K` in `namespace` that `labels` selects.
    pub async fn list_in<K>(&self, namespace: &str, labels: &str) -> Result<Vec<K>, CallError>
    where
        K: Namespaced,
    {
        let api = Api::<K>::namespaced(self.client.clone(), namespace);
        let what = format!("list {} in {namespace}", K::plural(&()));
        self.list(&what, api, labels).await
    }

    /// Every object of `K` (in every namespace) that `labels` selects.
    pub async fn list_all<K>(&self, labels: &str) -> Result<Vec<K>, CallError>
    where
        K: Object,
    {
        let api = Api::<K>::all(self.client.clone());
        let what = format!("list {}", K::plural(&()));
        self.list(&what, api, labels).await
    }

    async fn list<K>(&self, what: &str, api: Api<K>, labels: &str) -> Result<Vec<K>, CallError>
    where
        K: kube::Resource + Clone + DeserializeOwned + Debug,
    {
        let mut params = ListParams::default();
        if !labels.is_empty() {
            params = params.labels(labels);
        }
        self.call(what, api.list(&params)).await.map(|l| l.items)
    }
}
