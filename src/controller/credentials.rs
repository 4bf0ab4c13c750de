//! Where a workspace's access key comes from: the one reader of credentials Secrets (used by the
//! reconciler and by `emr-ray-operator list --secret`), and the resolution of a workspace's
//! `spec.credentials` — a Secret of its namespace, or `EmrClusterCredentials` that allow it.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::core::{Selector, SelectorExt};

use kube::Resource;
use kube::runtime::events::{EventType, Recorder};
use tracing::warn;

use super::error::SyncError;
use crate::api::{
    EmrClusterCredentials, EmrClusterCredentialsSpec, EmrWorkspace, Reason, RrsaCredentials,
    SecretCredentials, WorkspaceCredentials,
};
use crate::emr::endpoint::EndpointPattern;
use crate::emr::{CredentialResolver, CredentialSource, Credentials, RrsaConfig, SecretString};

/// Reads the access key from a Secret's data with the keys `keys` names (the CRD's defaults
/// when unset). Pure.
pub fn from_secret_data(
    secret: &Secret,
    keys: &SecretCredentials,
    display: &str,
) -> Result<Credentials, SyncError> {
    let empty = Default::default();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let get = |k: &str| -> Option<String> {
        data.get(k)
            .and_then(|b| std::str::from_utf8(&b.0).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let missing = |key: &str, what: &str| {
        SyncError::local(
            Reason::SecretKeyMissing,
            format!("Secret {display} has no non-empty key {key:?} ({what})"),
        )
    };
    let id = get(keys.id_key()).ok_or_else(|| missing(keys.id_key(), "the AccessKey ID"))?;
    let secret_value =
        get(keys.secret_key()).ok_or_else(|| missing(keys.secret_key(), "the AccessKey secret"))?;
    Ok(Credentials {
        access_key_id: id,
        access_key_secret: SecretString::from(secret_value),
        security_token: get(keys.token_key()).map(SecretString::from),
    })
}

/// Reads `keys.name` in `ns` and its access key.
pub async fn from_secret(
    client: &kube::Client,
    ns: &str,
    keys: &SecretCredentials,
) -> Result<Credentials, SyncError> {
    let display = format!("{ns}/{}", keys.name);
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = match api.get_opt(&keys.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(SyncError::local(
                Reason::SecretNotFound,
                format!("Secret {display} does not exist"),
            ));
        }
        // The API server's text names the operator's identity: not repeated.
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Err(SyncError::local(
                Reason::CredentialsUnavailable,
                format!(
                    "the operator may not read Secret {display} (it needs get on Secrets in \
                     namespace {ns}, which the chart grants)"
                ),
            ));
        }
        Err(e) => {
            return Err(SyncError::local(
                Reason::CredentialsUnavailable,
                format!("reading Secret {display} failed: {e}"),
            ));
        }
    };
    from_secret_data(&secret, keys, &display)
}

/// Whether cluster credentials `name` may be sent to `endpoint`: their `allowedEndpoints`
/// (already parsed) are empty (wherever the operator allows) or one of them matches. Pure.
pub fn endpoint_permitted(
    name: &str,
    allowed: &[EndpointPattern],
    endpoint: &url::Url,
) -> Result<(), SyncError> {
    if allowed.is_empty() || allowed.iter().any(|p| p.matches(endpoint)) {
        return Ok(());
    }
    let list = EndpointPattern::list(allowed);
    Err(SyncError::local(
        Reason::EndpointNotAllowed,
        format!(
            "endpoint {endpoint} is not allowed by the cluster credentials {name} (allowed: {list})"
        ),
    ))
}

/// The credentials of a workspace that is to call `endpoint`: a Secret of its own namespace,
/// or cluster credentials that allow its namespace and that endpoint — checked before their
/// Secret is read or STS is called. Nothing in a namespaced spec can name a file, a role or
/// the operator's own identity.
///
/// Once cluster credentials are granted, what goes wrong with them is the cluster admin's to
/// fix and partly theirs to know (the admin Secret's name, the operator's identity, the token
/// file, STS's answer): the tenant's status says only that they cannot be used and where the
/// admin looks; the cause goes to the operator's log and an Event on the
/// `EmrClusterCredentials`.
pub async fn for_workspace(
    ws: &EmrWorkspace,
    endpoint: &url::Url,
    client: &kube::Client,
    resolver: &CredentialResolver,
    recorder: &Recorder,
) -> Result<Credentials, SyncError> {
    let ns = ws.metadata.namespace.clone().unwrap_or_default();
    let c: &WorkspaceCredentials = &ws.spec.credentials;
    if let Some(sr) = &c.secret_ref {
        return from_secret(client, &ns, sr).await;
    }
    let Some(r) = &c.cluster_credentials_ref else {
        return Err(SyncError::local(
            Reason::InvalidSpec,
            "credentials: set secretRef or clusterCredentialsRef".to_string(),
        ));
    };
    let cc = permitted_cluster_credentials(client, &r.name, &ns).await?;
    match granted(&cc, &r.name, endpoint, client, resolver).await {
        Ok(c) => Ok(c),
        // The tenant may act on an endpoint it chose: that answer stays whole.
        Err(e) if e.reason() == Reason::EndpointNotAllowed => Err(e),
        Err(e) => Err(admins_only(ws, &cc, e, recorder).await),
    }
}

/// The access key of cluster credentials granted to the workspace's namespace.
async fn granted(
    cc: &EmrClusterCredentials,
    name: &str,
    endpoint: &url::Url,
    client: &kube::Client,
    resolver: &CredentialResolver,
) -> Result<Credentials, SyncError> {
    let allowed_endpoints = cc
        .spec
        .allowed_endpoints
        .iter()
        .map(|p| p.parse::<EndpointPattern>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            SyncError::local(
                Reason::CredentialsUnavailable,
                format!("EmrClusterCredentials {name}: allowedEndpoints: {e}"),
            )
        })?;
    endpoint_permitted(name, &allowed_endpoints, endpoint)?;
    let src = &cc.spec.source;
    if let Some(sr) = &src.secret_ref {
        from_secret(client, &sr.namespace, &sr.secret).await
    } else if let Some(rrsa) = &src.rrsa {
        Ok(resolver
            .resolve(&CredentialSource::Rrsa(rrsa_config(rrsa)?))
            .await?)
    } else {
        Ok(resolver.resolve(&CredentialSource::Environment).await?)
    }
}

/// What the tenant is told of a failure of granted cluster credentials (see [`for_workspace`]):
/// the same reason — it decides the backoff — with a message that names only the cluster
/// credentials; the cause is logged and published as an Event on them.
async fn admins_only(
    ws: &EmrWorkspace,
    cc: &EmrClusterCredentials,
    e: SyncError,
    recorder: &Recorder,
) -> SyncError {
    let name = cc.metadata.name.clone().unwrap_or_default();
    let ns = ws.metadata.namespace.clone().unwrap_or_default();
    let workspace = ws.metadata.name.clone().unwrap_or_default();
    let reason = e.reason();
    warn!(cluster_credentials = %name, namespace = %ns, workspace = %workspace, reason = %reason, error = %e, "cluster credentials cannot be used");
    super::apply::publish(
        recorder,
        &cc.object_ref(&()),
        EventType::Warning,
        reason,
        format!("used by EmrWorkspace {ns}/{workspace}: {e}"),
    )
    .await;
    let message = format!(
        "the cluster credentials {name} cannot be used now ({reason}); a cluster admin finds \
         the cause in the Events of EmrClusterCredentials {name} and the operator's log"
    );
    match e {
        SyncError::Remote(r) => SyncError::Remote(crate::emr::EmrError {
            message,
            code: None,
            request_id: None,
            ..r
        }),
        SyncError::Local { reason, .. } => SyncError::local(reason, message),
    }
}

/// The `EmrClusterCredentials` named `name`, if it allows namespace `ns`. A missing object and
/// one that does not allow the namespace give the same answer, so that a tenant cannot probe
/// which cluster credentials exist.
async fn permitted_cluster_credentials(
    client: &kube::Client,
    name: &str,
    ns: &str,
) -> Result<EmrClusterCredentials, SyncError> {
    let denied = || {
        SyncError::local(
            Reason::CredentialsNotPermitted,
            format!(
                "EmrClusterCredentials {name} does not exist or does not allow namespace {ns}; \
                 a cluster admin grants it in spec.namespaces or spec.namespaceSelector"
            ),
        )
    };
    // The API server's text may name the operator's identity: logged, not shown.
    let unavailable = |e: kube::Error| {
        warn!(cluster_credentials = %name, namespace = %ns, error = %e, "reading cluster credentials failed");
        SyncError::local(
            Reason::CredentialsUnavailable,
            format!(
                "reading EmrClusterCredentials {name} failed; retried (the operator's log has \
                 the cause)"
            ),
        )
    };
    let api: Api<EmrClusterCredentials> = Api::all(client.clone());
    let cc = api
        .get_opt(name)
        .await
        .map_err(unavailable)?
        .ok_or_else(denied)?;
    // The namespace's labels are read only when a selector may grant it.
    let labels =
        if cc.spec.namespaces.iter().any(|n| n == ns) || cc.spec.namespace_selector.is_none() {
            BTreeMap::new()
        } else {
            Api::<Namespace>::all(client.clone())
                .get_metadata_opt(ns)
                .await
                .map_err(unavailable)?
                .and_then(|n| n.metadata.labels)
                .unwrap_or_default()
        };
    match grants(&cc.spec, ns, &labels) {
        Ok(true) => Ok(cc),
        Ok(false) => Err(denied()),
        // The admin's mistake, answered to the tenant like any refusal (an answer of its
        // own would tell which cluster credentials exist).
        Err(e) => {
            warn!(cluster_credentials = %name, namespace = %ns, error = %e, "cluster credentials have an invalid namespaceSelector: they grant no namespace");
            Err(denied())
        }
    }
}

/// Whether cluster credentials allow namespace `ns` (with `labels`): by name, or by
/// `namespaceSelector`; nothing by default. Pure.
pub fn grants(
    spec: &EmrClusterCredentialsSpec,
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    if spec.namespaces.iter().any(|n| n == ns) {
        return Ok(true);
    }
    let Some(sel) = spec.namespace_selector.clone() else {
        return Ok(false);
    };
    let selector = Selector::try_from(sel).map_err(|e| e.to_string())?;
    Ok(selector.matches(labels))
}

/// RRSA settings: the cluster credentials' fields over the operator's environment.
fn rrsa_config(r: &RrsaCredentials) -> Result<RrsaConfig, SyncError> {
    let mut cfg = RrsaConfig::from_env().unwrap_or_else(|_| RrsaConfig {
        role_arn: String::new(),
        oidc_provider_arn: String::new(),
        token_file: Default::default(),
        session_name: "emr-ray-operator".to_string(),
        sts_endpoint: None,
        duration_seconds: 3600,
    });
    if let Some(v) = &r.role_arn {
        cfg.role_arn = v.clone();
    }
    if let Some(v) = &r.oidc_provider_arn {
        cfg.oidc_provider_arn = v.clone();
    }
    if let Some(v) = &r.oidc_token_file_path {
        cfg.token_file = v.into();
    }
    if let Some(v) = &r.session_name {
        cfg.session_name = v.clone();
    }
    if cfg.role_arn.is_empty()
        || cfg.oidc_provider_arn.is_empty()
        || cfg.token_file.as_os_str().is_empty()
    {
        return Err(SyncError::local(
            Reason::CredentialsUnavailable,
            "RRSA needs roleArn, oidcProviderArn and oidcTokenFilePath (in the \
             EmrClusterCredentials or the operator's ALIBABA_CLOUD_* environment)"
                .to_string(),
        ));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[test]
    fn cluster_credentials_endpoints_are_checked_before_use() {
        let url = |u: &str| url::Url::parse(u).unwrap();
        let pats = |ps: &[&str]| -> Vec<EndpointPattern> {
            ps.iter().map(|p| p.parse().unwrap()).collect()
        };
        let vpc = "https://emr-serverless-spark-vpc.cn-hangzhou.aliyuncs.com";
        let cases: [(&[&str], &str, bool); 5] = [
            (
                &[],
                "https://emr-serverless-spark.cn-hangzhou.aliyuncs.com",
                true,
            ),
            (&[vpc], vpc, true),
            (
                &[vpc],
                "https://emr-serverless-spark.cn-hangzhou.aliyuncs.com",
                false,
            ),
            (
                &["https://emr-serverless-spark-vpc.{region}.aliyuncs.com"],
                vpc,
                true,
            ),
            (
                &["https://emr-serverless-spark.{region}.aliyuncs.com"],
                vpc,
                false,
            ),
        ];
        for (allowed, endpoint, ok) in cases {
            let got = endpoint_permitted("team", &pats(allowed), &url(endpoint));
            assert_eq!(got.is_ok(), ok, "{allowed:?} {endpoint}");
            if let Err(e) = got {
                assert_eq!(e.reason(), Reason::EndpointNotAllowed);
                assert!(e.to_string().contains("cluster credentials team"), "{e}");
            }
        }
    }

    use k8s_openapi::ByteString;
    use serde_json::json;

    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    fn keys() -> SecretCredentials {
        SecretCredentials {
            name: "creds".into(),
            access_key_id_key: None,
            access_key_secret_key: None,
            security_token_key: None,
        }
    }

    #[test]
    fn default_keys_are_the_crds() {
        let c = from_secret_data(
            &secret(&[("accessKeyId", " id \n"), ("accessKeySecret", "s")]),
            &keys(),
            "ns/creds",
        )
        .unwrap();
        assert_eq!(c.access_key_id, "id");
        assert_eq!(c.access_key_secret.expose(), "s");
        assert!(c.security_token.is_none());
    }

    #[test]
    fn missing_or_empty_keys_name_the_key_and_never_the_value() {
        let e = from_secret_data(
            &secret(&[("accessKeyId", "id"), ("accessKeySecret", "  ")]),
            &keys(),
            "ns/creds",
        )
        .unwrap_err();
        assert_eq!(e.reason(), Reason::SecretKeyMissing);
        assert!(e.to_string().contains("\"accessKeySecret\""), "{e}");
        let e = from_secret_data(&secret(&[("AccessKeyId", "id-value")]), &keys(), "ns/creds")
            .unwrap_err();
        assert!(!e.to_string().contains("id-value"));
    }

    #[test]
    fn cluster_credentials_grant_by_name_or_selector_only() {
        let spec = |v: serde_json::Value| -> EmrClusterCredentialsSpec {
            serde_json::from_value(v).unwrap()
        };
        let team = BTreeMap::from([("team".to_string(), "ml".to_string())]);
        let none = BTreeMap::new();
        let env = json!({"environment": {}});
        let rows = [
            (
                "nothing granted",
                json!({"source": env}),
                "a",
                &team,
                Ok(false),
            ),
            (
                "by name",
                json!({"source": env, "namespaces": ["a"]}),
                "a",
                &none,
                Ok(true),
            ),
            (
                "another name",
                json!({"source": env, "namespaces": ["b"]}),
                "a",
                &team,
                Ok(false),
            ),
            (
                "by label",
                json!({"source": env, "namespaceSelector": {"matchLabels": {"team": "ml"}}}),
                "a",
                &team,
                Ok(true),
            ),
            (
                "labels do not match",
                json!({"source": env, "namespaceSelector": {"matchLabels": {"team": "ml"}}}),
                "a",
                &none,
                Ok(false),
            ),
            (
                "an empty selector selects every namespace",
                json!({"source": env, "namespaceSelector": {}}),
                "a",
                &none,
                Ok(true),
            ),
        ];
        for (what, s, ns, labels, want) in rows {
            assert_eq!(grants(&spec(s), ns, labels), want, "{what}");
        }
        let bad = spec(
            json!({"source": env, "namespaceSelector": {"matchExpressions": [
            {"key": "team", "operator": "Bogus", "values": ["ml"]}]}}),
        );
        assert!(
            grants(&bad, "a", &team).is_err(),
            "an invalid selector is an error"
        );
    }

    #[test]
    fn custom_keys_and_token() {
        let k = SecretCredentials {
            access_key_id_key: Some("id".into()),
            access_key_secret_key: Some("secret".into()),
            security_token_key: Some("tok".into()),
            ..keys()
        };
        let c = from_secret_data(
            &secret(&[("id", "a"), ("secret", "b"), ("tok", "t")]),
            &k,
            "ns/creds",
        )
        .unwrap();
        assert_eq!(c.security_token.unwrap().expose(), "t");
    }
}
