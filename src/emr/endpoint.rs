//! EMR Serverless Spark endpoints.

use super::error::{EmrError, ErrorKind};

/// The geographic prefixes of Alibaba Cloud region IDs (`cn-hangzhou`, `ap-southeast-1`,
/// `eu-central-1`, `us-west-1`, `me-east-1`, `cn-shanghai-finance-1`, …).
const REGION_PREFIXES: [&str; 8] = ["cn", "ap", "eu", "us", "me", "na", "sa", "rus"];

/// Region-shaped: `<geo>-<name>[-<part>…]`, a geographic prefix, then a name of letters, then
/// parts of letters or digits, at most 32 characters. A label that names another service
/// (`oss-cn-hangzhou`: a bucket's virtual host) is not a region, so
/// `emr-serverless-spark.<region>.aliyuncs.com` always names EMR Serverless Spark.
pub fn valid_region(region: &str) -> bool {
    let mut parts = region.split('-');
    let geo_ok = parts.next().is_some_and(|g| REGION_PREFIXES.contains(&g));
    let name_ok = parts
        .next()
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase()));
    region.len() <= 32
        && geo_ok
        && name_ok
        && parts.all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The CRD's pattern for `regionId`, the same shape as [`valid_region`].
pub const REGION_PATTERN: &str = r"^(cn|ap|eu|us|me|na|sa|rus)-[a-z]+(-[a-z0-9]+)*$";

/// The endpoint to call: `explicit` wins (must be an `http`/`https` URL with a host, no query
/// or fragment); otherwise `https://emr-serverless-spark.<region>.aliyuncs.com/` or, with `vpc`,
/// `https://emr-serverless-spark-vpc.<region>.aliyuncs.com/`.
pub fn resolve(region: &str, vpc: bool, explicit: Option<&str>) -> Result<url::Url, EmrError> {
    let invalid = |m: String| EmrError::new(ErrorKind::Config, m);
    if let Some(raw) = explicit.map(str::trim).filter(|s| !s.is_empty()) {
        let url = url::Url::parse(raw)
            .map_err(|e| invalid(format!("invalid endpoint URL {raw:?}: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(invalid(format!(
                "endpoint {raw:?} must use http or https, not {}",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!("endpoint {raw:?} has no host")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "endpoint URL must not contain user info".to_string(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(format!(
                "endpoint {raw:?} must not have a query or fragment"
            )));
        }
        return Ok(url);
    }
    if !valid_region(region) {
        return Err(invalid(format!(
            "invalid region {region:?}: expected something like cn-hangzhou"
        )));
    }
    let host = if vpc {
        format!("emr-serverless-spark-vpc.{region}.aliyuncs.com")
    } else {
        format!("emr-serverless-spark.{region}.aliyuncs.com")
    };
    url::Url::parse(&format!("https://{host}/")).map_err(|e| invalid(e.to_string()))
}

/// One allowed endpoint: `scheme://host[:port]`. In the host, `{region}` stands for exactly one
/// region-shaped label ([`valid_region`]: `https://emr-serverless-spark.{region}.aliyuncs.com`)
/// and `*` for any one DNS label — refused under Alibaba Cloud's shared domains such as
/// `aliyuncs.com`, where it would also admit other services' hosts (use `{region}` there). Port
/// `*` is any port; no port is the scheme's default. `http` is allowed only where a pattern names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPattern {
    scheme: String,
    host: Vec<String>,
    port: Option<Option<u16>>,
    text: String,
}

impl std::str::FromStr for EndpointPattern {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let text = raw.trim();
        let bad = |why: &str| format!("endpoint pattern {text:?}: {why}");
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port]"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return Err(bad("only scheme, host and port"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, "*")) => (h, Some(None)),
            Some((h, p)) => (
                h,
                Some(Some(p.parse::<u16>().map_err(|_| bad("invalid port"))?)),
            ),
            None => (rest, None),
        };
        let labels: Vec<String> = host.split('.').map(|l| l.to_ascii_lowercase()).collect();
        let label_ok = |l: &String| {
            l == "*"
                || l == REGION_LABEL
                || (!l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        if labels.is_empty() || !labels.iter().all(label_ok) {
            return Err(bad("invalid host"));
        }
        // Under Alibaba Cloud's shared domains a label names the service or the region (and a
        // bucket's virtual host looks like a region): `*` there would admit other services.
        let lowercase = labels.join(".");
        if labels.iter().any(|l| l == "*")
            && let Some(domain) = SHARED_DOMAINS
                .iter()
                .find(|d| lowercase.ends_with(&format!(".{d}")))
        {
            return Err(bad(&format!(
                "`*` is not allowed in a host under {domain}, where it would also match other \
                 services' hosts: use {{region}} for the region label"
            )));
        }
        Ok(EndpointPattern {
            scheme,
            host: labels,
            port,
            text: text.to_string(),
        })
    }
}

impl std::fmt::Display for EndpointPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl EndpointPattern {
    /// `patterns` as a comma-separated list, for messages.
    pub fn list(patterns: &[EndpointPattern]) -> String {
        patterns
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn matches(&self, url: &url::Url) -> bool {
        if url.scheme() != self.scheme {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        let host_ok = labels.len() == self.host.len()
            && labels
                .iter()
                .zip(&self.host)
                .all(|(l, p)| p == "*" || (p == REGION_LABEL && valid_region(l)) || p == l);
        let port_ok = match self.port {
            Some(None) => true,
            Some(Some(p)) => url.port_or_known_default() == Some(p),
            None => url.port().is_none(),
        };
        host_ok && port_ok
    }
}

/// The endpoints the operator sends credentials to: the official ones, plus what the operator
/// is told to allow.
#[derive(Clone, Debug)]
pub struct EndpointPolicy(Vec<EndpointPattern>);

/// Alibaba Cloud's shared service domains, under which a pattern may not use `*`.
const SHARED_DOMAINS: [&str; 4] = [
    "aliyuncs.com",
    "aliyun.com",
    "alibabacloud.com",
    "aliyun-inc.com",
];

/// The host label of a pattern that matches one region-shaped label.
const REGION_LABEL: &str = "{region}";

/// The official public and VPC endpoints of every region.
pub const DEFAULT_ALLOWED_ENDPOINTS: [&str; 2] = [
    "https://emr-serverless-spark.{region}.aliyuncs.com",
    "https://emr-serverless-spark-vpc.{region}.aliyuncs.com",
];

impl Default for EndpointPolicy {
    fn default() -> Self {
        EndpointPolicy(
            DEFAULT_ALLOWED_ENDPOINTS
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
        )
    }
}

impl EndpointPolicy {
    /// The defaults plus `extra`.
    pub fn with(extra: Vec<EndpointPattern>) -> Self {
        let mut p = EndpointPolicy::default();
        p.0.extend(extra);
        p
    }

    pub fn allows(&self, url: &url::Url) -> bool {
        self.0.iter().any(|p| p.matches(url))
    }

    pub fn patterns(&self) -> &[EndpointPattern] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_region_shaped() {
        let regex = regex_lite_match;
        for (region, ok) in [
            ("cn-hangzhou", true),
            ("ap-southeast-1", true),
            ("eu-central-1", true),
            ("us-west-1", true),
            ("me-east-1", true),
            ("cn-shanghai-finance-1", true),
            ("cn-north-2-gov-1", true),
            ("rus-west-1", true),
            ("oss-cn-hangzhou", false),
            ("sts", false),
            ("fc", false),
            ("cn", false),
            ("cn-", false),
            ("cn-1", false),
            ("cn--hangzhou", false),
            ("CN-hangzhou", false),
            ("cn-hangzhou.evil", false),
            ("cn-hangzhouxxxxxxxxxxxxxxxxxxxxxxxxxxx", false),
        ] {
            assert_eq!(valid_region(region), ok, "{region}");
            if region.len() <= 32 {
                assert_eq!(regex(region), ok, "CRD pattern on {region}");
            }
        }
    }

    /// [`REGION_PATTERN`] evaluated by hand (no regex crate in the product): the geo prefix,
    /// then `-[a-z]+`, then `(-[a-z0-9]+)*`.
    fn regex_lite_match(s: &str) -> bool {
        let Some((geo, rest)) = s.split_once('-') else {
            return false;
        };
        let geos = REGION_PATTERN
            .trim_start_matches("^(")
            .split_once(')')
            .map(|(g, _)| g.split('|').collect::<Vec<_>>())
            .unwrap_or_default();
        let mut parts = rest.split('-');
        geos.contains(&geo)
            && parts
                .next()
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase()))
            && parts.all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
    }

    #[test]
    fn official_endpoints_are_allowed_and_nothing_else() {
        let p = EndpointPolicy::default();
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(p.allows(&resolve("cn-hangzhou", false, None).unwrap()));
        assert!(p.allows(&resolve("ap-southeast-1", true, None).unwrap()));
        // A region that is another service's label: a bucket's virtual host on OSS.
        assert!(resolve("oss-cn-hangzhou", false, None).is_err());
        for bad in [
            "https://emr-serverless-spark.oss-cn-hangzhou.aliyuncs.com/",
            "https://emr-serverless-spark-vpc.oss-cn-hangzhou-internal.aliyuncs.com/",
            "https://emr-serverless-spark.fc.aliyuncs.com/",
            "http://emr-serverless-spark.cn-hangzhou.aliyuncs.com/",
            "https://emr-serverless-spark.cn-hangzhou.aliyuncs.com:8443/",
            "https://emr-serverless-spark.a.b.aliyuncs.com/",
            "https://evil.com/",
            "https://emr-serverless-spark.cn-hangzhou.aliyuncs.com.evil.com/",
            "http://169.254.169.254/",
            "http://127.0.0.1:8480/",
        ] {
            assert!(!p.allows(&u(bad)), "{bad}");
        }
    }

    #[test]
    fn extra_patterns() {
        let p = EndpointPolicy::with(vec![
            "http://127.0.0.1:*".parse().unwrap(),
            "https://proxy.internal:8443".parse().unwrap(),
        ]);
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(p.allows(&u("http://127.0.0.1:8480/")));
        assert!(p.allows(&u("https://proxy.internal:8443/x")));
        assert!(!p.allows(&u("https://proxy.internal/")));
        assert!(!p.allows(&u("https://127.0.0.1:8480/")));
        for bad in [
            "ftp://x",
            "https://",
            "https://a/b",
            "https://u@h",
            "h",
            "https://a:99999",
        ] {
            assert!(bad.parse::<EndpointPattern>().is_err(), "{bad}");
        }
    }

    /// Issue 18 item 3: under Alibaba Cloud's shared domains `*` could stand for a label that
    /// changes the service (`oss-cn-hangzhou`: a bucket's virtual host), so it is refused there;
    /// `{region}` admits only region-shaped labels. Elsewhere `*` is the admin's to use.
    #[test]
    fn a_wildcard_under_a_shared_cloud_domain_is_refused() {
        for bad in [
            "https://emr-serverless-spark.*.aliyuncs.com",
            "https://*.cn-hangzhou.aliyuncs.com",
            "https://*.aliyuncs.com:*",
            "https://emr-serverless-spark.*.ALIYUNCS.COM",
            "https://x.*.alibabacloud.com",
            "https://x.*.aliyun.com",
        ] {
            let e = bad.parse::<EndpointPattern>().unwrap_err();
            assert!(e.contains("use {region}"), "{bad}: {e}");
        }
        let region: EndpointPattern = "https://emr-serverless-spark.{region}.aliyuncs.com"
            .parse()
            .unwrap();
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(region.matches(&u("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com/")));
        assert!(!region.matches(&u(
            "https://emr-serverless-spark.oss-cn-hangzhou.aliyuncs.com/"
        )));
        // The admin's own domains, and a host that only contains the shared domain's name.
        for ok in [
            "https://*.emr.corp.example",
            "https://*.aliyuncs.com.corp.example",
        ] {
            assert!(ok.parse::<EndpointPattern>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            resolve("cn-hangzhou", false, None).unwrap().as_str(),
            "https://emr-serverless-spark.cn-hangzhou.aliyuncs.com/"
        );
        assert_eq!(
            resolve("ap-southeast-1", true, None).unwrap().as_str(),
            "https://emr-serverless-spark-vpc.ap-southeast-1.aliyuncs.com/"
        );
        assert_eq!(
            resolve("bad region", false, Some("http://127.0.0.1:8480"))
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8480/"
        );
        for bad in [
            "",
            "CN-HANGZHOU",
            "cn_hangzhou",
            "cn-hangzhou.evil.com",
            "-x",
        ] {
            let e = resolve(bad, false, None).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Config, "{bad}");
        }
        for bad in ["ftp://x", "not a url", "http://u:p@h/", "https://h/?a=b"] {
            assert!(resolve("cn-hangzhou", false, Some(bad)).is_err(), "{bad}");
        }
    }
}
