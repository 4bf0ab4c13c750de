//! Where access keys come from: a workspace's `spec.credentials`, and the cluster-scoped
//! `EmrClusterCredentials` that only cluster admins create and grant to namespaces.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default Secret keys of `credentials.secretRef` (the `list --secret` command uses the same).
pub const DEFAULT_ACCESS_KEY_ID_KEY: &str = "accessKeyId";
pub const DEFAULT_ACCESS_KEY_SECRET_KEY: &str = "accessKeySecret";
pub const DEFAULT_SECURITY_TOKEN_KEY: &str = "securityToken";

/// Credentials for the EMR OpenAPI. Exactly one source must be set. A namespaced workspace may
/// only use a Secret of its own namespace, or cluster credentials that a cluster admin created
/// and that allow its namespace: the operator's own identity is never available to a tenant
/// otherwise.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.secretRef), has(self.clusterCredentialsRef)].filter(x, x).size() == 1").message("credentials: set exactly one of secretRef or clusterCredentialsRef"))]
pub struct WorkspaceCredentials {
    /// A Secret in the workspace's namespace holding an AccessKey (and optionally an STS token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretCredentials>,
    /// An `EmrClusterCredentials` (cluster-scoped, created by cluster admins) that allows this
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_credentials_ref: Option<ClusterCredentialsRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCredentialsRef {
    /// Name of the `EmrClusterCredentials` (a DNS subdomain).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// A Secret and the keys of its access key (in the workspace's namespace for a workspace's
/// `secretRef`; in the named namespace for `EmrClusterCredentials`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretCredentials {
    /// Name of the Secret (a DNS subdomain).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key of the AccessKey ID. Default `accessKeyId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub access_key_id_key: Option<String>,
    /// Key of the AccessKey secret. Default `accessKeySecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub access_key_secret_key: Option<String>,
    /// Key of an optional STS security token. Default `securityToken` (used when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub security_token_key: Option<String>,
}

impl SecretCredentials {
    pub fn id_key(&self) -> &str {
        self.access_key_id_key
            .as_deref()
            .unwrap_or(DEFAULT_ACCESS_KEY_ID_KEY)
    }
    pub fn secret_key(&self) -> &str {
        self.access_key_secret_key
            .as_deref()
            .unwrap_or(DEFAULT_ACCESS_KEY_SECRET_KEY)
    }
    pub fn token_key(&self) -> &str {
        self.security_token_key
            .as_deref()
            .unwrap_or(DEFAULT_SECURITY_TOKEN_KEY)
    }
}

/// Credentials that only cluster admins create (cluster-scoped; not aggregated to the `edit` or
/// `admin` roles), with the namespaces that may use them — the role of External Secrets
/// Operator's `ClusterSecretStore` or Crossplane's `ProviderConfig`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "emr.aliyun.io",
    version = "v1alpha1",
    kind = "EmrClusterCredentials",
    plural = "emrclustercredentials",
    shortname = "emrcc",
    category = "emr"
)]
#[serde(rename_all = "camelCase")]
pub struct EmrClusterCredentialsSpec {
    /// Where the access key comes from: exactly one source.
    pub source: ClusterCredentialsSource,
    /// Namespaces whose `EmrWorkspace`s may use these credentials (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub namespaces: Vec<String>,
    /// Namespaces, by label, whose `EmrWorkspace`s may use these credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// Endpoints this identity may be sent to (patterns like the operator's
    /// `--allowed-endpoints`, e.g. `https://emr-serverless-spark-vpc.cn-hangzhou.aliyuncs.com`);
    /// empty: every endpoint the operator allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allowed_endpoints: Vec<String>,
}

/// The identity behind `EmrClusterCredentials`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.secretRef), has(self.rrsa), has(self.environment)].filter(x, x).size() == 1").message("source: set exactly one of secretRef, rrsa or environment"))]
pub struct ClusterCredentialsSource {
    /// A Secret in the namespace it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<NamespacedSecretCredentials>,
    /// RAM Roles for Service Accounts (ACK RRSA): `AssumeRoleWithOIDC` with the operator's
    /// projected service-account token. Fields left empty come from the operator's environment
    /// (`ALIBABA_CLOUD_ROLE_ARN`, `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`, `ALIBABA_CLOUD_OIDC_TOKEN_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rrsa: Option<RrsaCredentials>,
    /// The operator's own environment (`ALIBABA_CLOUD_ACCESS_KEY_ID`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentCredentials>,
}

/// A Secret in any namespace (only cluster admins write `EmrClusterCredentials`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedSecretCredentials {
    /// The Secret's namespace (a DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: String,
    /// The Secret's name and keys.
    #[serde(flatten)]
    pub secret: SecretCredentials,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RrsaCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub oidc_provider_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub oidc_token_file_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub session_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct EnvironmentCredentials {}
