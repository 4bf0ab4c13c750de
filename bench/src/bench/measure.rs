//! What the bench reads besides the mirrors: the API server's write counters, and an operator
//! process's RSS, CPU time and own count of writes.

use anyhow::Context as _;

/// Write requests per resource, from the API server's `apiserver_request_total`.
pub(super) async fn apiserver_writes(client: &kube::Client, resource: &str) -> anyhow::Result<f64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut total = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some(close) = rest.rfind('}') else {
            continue;
        };
        let labels = &rest[..close];
        let write = ["POST", "PUT", "PATCH", "APPLY", "DELETE"]
            .iter()
            .any(|v| labels.contains(&format!("verb=\"{v}\"")));
        if write && labels.contains(&format!("resource=\"{resource}\"")) {
            total += rest[close + 1..].trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(total)
}

/// Write requests to one resource: the API server's count (of every client, cluster-wide) and
/// the operator's own.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Writes {
    pub(super) api: f64,
    pub(super) own: f64,
}

impl std::ops::Sub for Writes {
    type Output = Writes;
    fn sub(self, rhs: Writes) -> Writes {
        Writes {
            api: self.api - rhs.api,
            own: self.own - rhs.own,
        }
    }
}

/// The write requests to `resource` so far, as [`Writes`].
pub(super) async fn writes(
    client: &kube::Client,
    op: &Proc,
    resource: &str,
) -> anyhow::Result<Writes> {
    Ok(Writes {
        api: apiserver_writes(client, resource).await?,
        own: op.own_writes(resource).await?,
    })
}

/// An operator process: /proc figures, and with `metrics`, its own count of writes.
pub(super) struct Proc {
    pub(super) pid: u32,
    /// Port of its `/metrics`, when the bench picked it.
    pub(super) metrics: Option<u16>,
}

impl Proc {
    /// The process of `child` (pid 0, which reads as nothing, once it has been waited for).
    pub(super) fn of(child: &tokio::process::Child) -> Self {
        Proc {
            pid: child.id().unwrap_or(0),
            metrics: None,
        }
    }

    /// The operator's own count of its Kubernetes write requests to `resource`
    /// (`emr_ray_operator_kube_writes_total`). An error without a metrics port, or when the
    /// metric is not exposed at all (renamed?): the write goals are judged on the smaller of
    /// this and the API server's count, so a silent 0 would pass them.
    pub(super) async fn own_writes(&self, resource: &str) -> anyhow::Result<f64> {
        let port = self
            .metrics
            .context("the operator's own writes need its /metrics port")?;
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await?
            .error_for_status()?
            .text()
            .await?;
        if !text.contains("# TYPE emr_ray_operator_kube_writes counter") {
            anyhow::bail!("the operator's /metrics has no emr_ray_operator_kube_writes counter");
        }
        let label = format!("resource=\"{resource}\"");
        Ok(text
            .lines()
            .filter(|l| l.starts_with("emr_ray_operator_kube_writes_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    pub(super) fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name (which is in parentheses).
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of /proc/pid/stat: 12 and 13 after the name.
        (ticks(11) + ticks(12)) / 100.0
    }
    pub(super) fn status_kb(&self, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// A port that was free a moment ago (the operator binds it right after).
pub(super) fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("picking a free port")?;
    Ok(l.local_addr()?.port())
}
