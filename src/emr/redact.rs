//! Redaction of the endpoints a remote cluster reports (dashboard URL, gRPC endpoint): they
//! may carry access tokens (the dashboard URL's `?token=` does). Only scheme, host, port and
//! path are kept; user info, query and fragment are removed. Used for status, Events, logs and
//! the `list` command alike.

use super::model::RayCluster;

/// `scheme://host[:port]/path` of `raw`, without user info, query or fragment. Text that is not
/// a URL keeps what precedes its first `?` or `#`, without anything up to an `@`.
pub fn redact_endpoint(raw: &str) -> String {
    let raw = raw.trim();
    if let Ok(mut url) = url::Url::parse(raw)
        && url.has_host()
    {
        let _ = url.set_password(None);
        let _ = url.set_username("");
        url.set_query(None);
        url.set_fragment(None);
        return url.to_string();
    }
    let cut = raw.find(['?', '#']).unwrap_or(raw.len());
    let head = &raw[..cut];
    // `scheme://user:pass@host/...` that did not parse: drop the user info.
    match (head.find("://"), head.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &head[..s + 3], &head[at + 1..]),
        (None, Some(at)) => head[at + 1..].to_string(),
        _ => head.to_string(),
    }
}

/// A cluster with its endpoints redacted ([`redact_endpoint`]).
pub fn redact_cluster(mut c: RayCluster) -> RayCluster {
    c.dashboard_url = c.dashboard_url.as_deref().map(redact_endpoint);
    c.grpc_endpoint = c.grpc_endpoint.as_deref().map(redact_endpoint);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_scheme_host_port_and_path_only() {
        let cases = [
            (
                "https://emr-spark-ray-gateway-cn-hangzhou.aliyuncs.com?token=xxxxxxxxx",
                "https://emr-spark-ray-gateway-cn-hangzhou.aliyuncs.com/",
            ),
            ("https://h/x?a=1&t=s3cr3t&b=2", "https://h/x"),
            ("https://h/x#access_token=s3cr3t", "https://h/x"),
            ("https://u:p@h:8443/dash?jwt=1", "https://h:8443/dash"),
            (
                "ray://u:p@head.internal:10001?auth=1",
                "ray://head.internal:10001",
            ),
            (
                "ray://emr-spark-ray-gateway-cn-hanghzou-internal.emr.aliyuncs.com:80",
                "ray://emr-spark-ray-gateway-cn-hanghzou-internal.emr.aliyuncs.com:80",
            ),
            ("not a url?token=x", "not a url"),
            ("user:secret@host:1/p#frag", "host:1/p"),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(redact_endpoint(raw), want, "{raw}");
        }
    }

    #[test]
    fn cluster_endpoints_are_redacted() {
        let c = redact_cluster(RayCluster {
            cluster_id: "c".into(),
            dashboard_url: Some("https://h/?ticket=abc".into()),
            grpc_endpoint: Some("ray://a:b@h:1?token=z".into()),
            ..Default::default()
        });
        assert_eq!(c.dashboard_url.as_deref(), Some("https://h/"));
        assert_eq!(c.grpc_endpoint.as_deref(), Some("ray://h:1"));
    }
}
