//! Where a workspace's access key comes from: the one reader of credentials Secrets (used by the
//! reconciler and by `emr-ray-operator list --secret`), and the resolution of a workspace's
//! `spec.credentials`.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::SyncError;
use crate::api::{EmrWorkspace, Reason, SecretCredentials, WorkspaceCredentials};
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
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Err(SyncError::local(
                Reason::CredentialsUnavailable,
                format!("the operator may not read Secret {display}: {}", s.message),
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

/// The credentials of a workspace: its Secret, RRSA, or the operator's environment.
pub async fn for_workspace(
    ws: &EmrWorkspace,
    client: &kube::Client,
    resolver: &CredentialResolver,
) -> Result<Credentials, SyncError> {
    let c: &WorkspaceCredentials = &ws.spec.credentials;
    if let Some(sr) = &c.secret_ref {
        let ns = ws.metadata.namespace.clone().unwrap_or_default();
        return from_secret(client, &ns, sr).await;
    }
    let source = match &c.rrsa {
        Some(r) => {
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
                    "RRSA needs roleArn, oidcProviderArn and oidcTokenFilePath (in the spec or \
                     the operator's ALIBABA_CLOUD_* environment)"
                        .to_string(),
                ));
            }
            CredentialSource::Rrsa(cfg)
        }
        None => CredentialSource::Environment,
    };
    Ok(resolver.resolve(&source).await?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

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
