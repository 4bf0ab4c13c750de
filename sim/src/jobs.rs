//! The simulator's `ListRayJob` (`GET /api/v1/workspaces/{ws}/rayJob`), as the official SDK
//! calls it: query `pageNum` (default 1), `pageSize` (default 20, 1..=100), the exact-match
//! filters `name`, `submissionId`, `taskBizId`, and `submitTime`, the SDK's "shrunk" JSON object
//! `{"startTime":ms,"endTime":ms}` (either bound optional; anything else is 400
//! `InvalidParameter`). The answer is `{"requestId","rayJobs":[…],"totalCount"}` with the SDK's
//! field names. Jobs are paged newest submission first (ties by `submissionId`), so that a page
//! is stable while nothing changes.
//!
//! The job store lives next to the clusters (a workspace's jobs are kept only while the
//! workspace exists); the admin API adds, replaces, removes and generates jobs.

use super::{Faults, SimState};
use emr_ray_operator::emr::job::{ListRayJobResponse, RayJob, SubmitWindow};
use rand::Rng as _;

/// A stored job: the listed fields and the data-development node ID `taskBizId` filters on
/// (which the listing does not return).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimJob {
    pub job: RayJob,
    pub task_biz_id: Option<String>,
}

impl SimJob {
    /// A job from the admin API's JSON: a `RayJob` plus an optional `taskBizId`.
    pub fn from_json(v: serde_json::Value) -> Result<SimJob, String> {
        let task_biz_id = v
            .get("taskBizId")
            .and_then(|t| t.as_str())
            .map(str::to_string);
        let job: RayJob = serde_json::from_value(v).map_err(|e| e.to_string())?;
        Ok(SimJob { job, task_biz_id })
    }
}

/// Filters of one request.
#[derive(Debug, Default, PartialEq)]
pub(super) struct JobQuery {
    pub page_num: usize,
    pub page_size: usize,
    pub name: Option<String>,
    pub submission_id: Option<String>,
    pub task_biz_id: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

impl JobQuery {
    /// The query's parameters, or the `InvalidParameter` message.
    pub(super) fn parse(query: &[(String, String)]) -> Result<JobQuery, String> {
        let text = |name: &str| {
            query
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let page_size = super::api::parse_int_param(
            query,
            "pageSize",
            20,
            |n| (1..=100).contains(&n),
            "an integer from 1 to 100",
        )? as usize;
        let page_num = super::api::parse_int_param(
            query,
            "pageNum",
            1,
            |n| n >= 1,
            "an integer greater than or equal to 1",
        )? as usize;
        let (start_ms, end_ms) = match text("submitTime") {
            None => (None, None),
            Some(v) => SubmitWindow::parse(&v).map_err(|e| {
                format!(
                    "The specified parameter submitTime is invalid: {e}. It must be a JSON \
                     object {{\"startTime\":ms,\"endTime\":ms}}."
                )
            })?,
        };
        Ok(JobQuery {
            page_num,
            page_size,
            name: text("name"),
            submission_id: text("submissionId"),
            task_biz_id: text("taskBizId"),
            start_ms,
            end_ms,
        })
    }

    fn matches(&self, j: &SimJob) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        let submitted = j.job.submit_time;
        eq(&self.name, j.job.name.as_deref())
            && eq(&self.submission_id, Some(j.job.submission_id.as_str()))
            && eq(&self.task_biz_id, j.task_biz_id.as_deref())
            && self
                .start_ms
                .is_none_or(|s| submitted.is_some_and(|t| t >= s))
            && self
                .end_ms
                .is_none_or(|e| submitted.is_some_and(|t| t <= e))
    }
}

/// One page of the matching jobs and their count, as bent by the `repeatPage` and `endEarly`
/// faults (the count stays the truth: that is what lets a client notice).
pub(super) fn page(jobs: &[SimJob], q: &JobQuery, faults: &Faults) -> ListRayJobResponse {
    let mut matching: Vec<&SimJob> = jobs.iter().filter(|j| q.matches(j)).collect();
    matching.sort_by(|a, b| {
        (b.job.submit_time, &a.job.submission_id).cmp(&(a.job.submit_time, &b.job.submission_id))
    });
    let effective = if q.page_num > 1 && faults.repeat_page {
        1
    } else {
        q.page_num
    };
    let ray_jobs = if q.page_num > 1 && faults.end_early {
        Vec::new()
    } else {
        let start = (effective - 1).saturating_mul(q.page_size);
        matching
            .iter()
            .skip(start)
            .take(q.page_size)
            .map(|j| j.job.clone())
            .collect()
    };
    ListRayJobResponse {
        request_id: None,
        ray_jobs: Some(ray_jobs),
        total_count: Some(matching.len() as i64),
    }
}

const STATES: [(&str, u32); 6] = [
    ("Succeeded", 60),
    ("Running", 15),
    ("Failed", 10),
    ("Pending", 5),
    ("Cancelled", 5),
    ("Timeout", 5),
];

/// A job with realistic values, submitted within the last `spread_ms` before `now_ms`.
pub fn generate(prefix: &str, index: usize, now_ms: i64, spread_ms: i64) -> SimJob {
    let mut rng = rand::rng();
    let id: String = (0..16)
        .map(|_| b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)] as char)
        .collect();
    let submitted = now_ms - rng.random_range(0..spread_ms.max(1));
    let mut roll = rng.random_range(0..100u32);
    let status = STATES
        .iter()
        .find(|(_, w)| {
            let hit = roll < *w;
            roll = roll.saturating_sub(*w);
            hit
        })
        .map_or("Succeeded", |(s, _)| s);
    let started = (status != "Pending").then_some(submitted + rng.random_range(1_000..60_000));
    let ended = match (status, started) {
        ("Running", _) | (_, None) => None,
        (_, Some(s)) => Some((s + rng.random_range(10_000..3_600_000)).min(now_ms)),
    };
    let duration = started.map(|s| (ended.unwrap_or(now_ms) - s).max(0) / 1000);
    SimJob {
        job: RayJob {
            submission_id: format!("raysubmit_{id}"),
            name: Some(format!("{prefix}-{index}")),
            status: Some(status.into()),
            cluster_state: Some(
                if ended.is_some() {
                    "Deleted"
                } else {
                    "Running"
                }
                .into(),
            ),
            resource_queue: Some("root_queue".into()),
            submit_time: Some(submitted),
            start_time: started,
            end_time: ended,
            duration,
            cu_hours: duration.map(|d| (d as f64 / 3600.0 * 4.0 * 100.0).round() / 100.0),
            creator_name: Some(["Alice", "Bob", "Carol", "Dave"][rng.random_range(0..4)].into()),
            dashboard_url: Some(format!(
                "https://emr-spark-ray-gateway-cn-hangzhou.aliyuncs.com/jobs/raysubmit_{id}?token={}",
                rng.random_range(10u64.pow(15)..10u64.pow(16))
            )),
        },
        task_biz_id: None,
    }
}

impl SimState {
    /// Inserts or replaces (by `submissionId`) a job; creates the workspace if needed.
    pub fn upsert_job(&self, ws: &str, j: SimJob) {
        self.ensure_workspace(ws);
        let mut all = self.jobs_lock();
        let list = all.entry(ws.to_string()).or_default();
        match list
            .iter_mut()
            .find(|x| x.job.submission_id == j.job.submission_id)
        {
            Some(existing) => *existing = j,
            None => list.push(j),
        }
    }

    pub fn remove_job(&self, ws: &str, submission_id: &str) -> bool {
        let mut all = self.jobs_lock();
        let Some(list) = all.get_mut(ws) else {
            return false;
        };
        let before = list.len();
        list.retain(|j| j.job.submission_id != submission_id);
        list.len() != before
    }

    pub fn jobs(&self, ws: &str) -> Vec<SimJob> {
        self.jobs_lock().get(ws).cloned().unwrap_or_default()
    }

    /// Replaces the jobs of a workspace.
    pub fn set_jobs(&self, ws: &str, jobs: Vec<SimJob>) {
        self.ensure_workspace(ws);
        self.jobs_lock().insert(ws.to_string(), jobs);
    }

    /// Appends `count` generated jobs submitted within the last `spread` (names
    /// `<prefix>-<n>`); returns their submission IDs.
    pub fn generate_jobs(
        &self,
        ws: &str,
        count: usize,
        prefix: &str,
        spread: std::time::Duration,
    ) -> Vec<String> {
        self.ensure_workspace(ws);
        let now = jiff::Timestamp::now().as_millisecond();
        let spread = i64::try_from(spread.as_millis()).unwrap_or(i64::MAX);
        let mut all = self.jobs_lock();
        let list = all.entry(ws.to_string()).or_default();
        let start = list.len();
        let mut seen: std::collections::HashSet<String> =
            list.iter().map(|j| j.job.submission_id.clone()).collect();
        let mut ids = Vec::with_capacity(count);
        for i in 0..count {
            let mut j = generate(prefix, start + i, now, spread);
            while !seen.insert(j.job.submission_id.clone()) {
                j = generate(prefix, start + i, now, spread);
            }
            ids.push(j.job.submission_id.clone());
            list.push(j);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, submitted: i64) -> SimJob {
        SimJob {
            job: RayJob {
                submission_id: id.into(),
                name: Some(format!("n-{id}")),
                submit_time: Some(submitted),
                ..Default::default()
            },
            task_biz_id: (id == "c").then(|| "task-1".into()),
        }
    }

    fn q(pairs: &[(&str, &str)]) -> Result<JobQuery, String> {
        JobQuery::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn pages_filter_and_count() {
        let jobs = vec![job("a", 10), job("b", 20), job("c", 30), job("d", 40)];
        let f = Faults::default();
        let p = page(&jobs, &q(&[("pageSize", "2")]).unwrap(), &f);
        let ids: Vec<_> = p
            .ray_jobs
            .unwrap()
            .into_iter()
            .map(|j| j.submission_id)
            .collect();
        assert_eq!(
            (ids, p.total_count),
            (vec!["d".into(), "c".into()], Some(4))
        );
        let w = q(&[("submitTime", r#"{"startTime":15,"endTime":30}"#)]).unwrap();
        let p = page(&jobs, &w, &f);
        assert_eq!(p.total_count, Some(2));
        let p = page(&jobs, &q(&[("taskBizId", "task-1")]).unwrap(), &f);
        assert_eq!(p.ray_jobs.unwrap()[0].submission_id, "c");
        let p = page(&jobs, &q(&[("name", "n-a")]).unwrap(), &f);
        assert_eq!(p.total_count, Some(1));
        let p = page(&jobs, &q(&[("submissionId", "zz")]).unwrap(), &f);
        assert_eq!(p.total_count, Some(0));
        assert!(
            q(&[("submitTime", "yesterday")])
                .unwrap_err()
                .contains("submitTime")
        );
        assert!(q(&[("pageSize", "101")]).is_err());
        let early = Faults {
            end_early: true,
            ..Default::default()
        };
        let p = page(
            &jobs,
            &q(&[("pageSize", "2"), ("pageNum", "2")]).unwrap(),
            &early,
        );
        assert_eq!((p.ray_jobs.unwrap().len(), p.total_count), (0, Some(4)));
    }

    #[test]
    fn generation() {
        let j = generate("etl", 3, 1_000_000_000, 60_000);
        let t = j.job.submit_time.unwrap();
        assert!((1_000_000_000 - 60_000..=1_000_000_000).contains(&t));
        assert!(j.job.dashboard_url.unwrap().contains("token="));
    }
}
