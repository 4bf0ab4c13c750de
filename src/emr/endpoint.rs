//! EMR Serverless Spark endpoints.

use super::error::{EmrError, ErrorKind};

/// `[a-z0-9-]+`, not starting or ending with `-`.
pub fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 64
        && !region.starts_with('-')
        && !region.ends_with('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
