//! `ListRayJob`: the jobs of a workspace submitted in a window, with the protections of the
//! cluster listing (signing, no redirects, rate limits, the bytes-in-flight budget, retries on
//! throttling, page, body and listing caps) and its all-or-nothing rule.
//!
//! Paging: `pageNum` from 1 and `pageSize`, until a page comes back short, **or** the jobs read
//! reach `totalCount`. `totalCount` is a hint, cross-checked: a listing whose distinct jobs do
//! not add up to the last page's `totalCount` (a server ending early, or the window's jobs
//! changing while paging) is `IncompleteListing`, never a silent prefix. A page that repeats a
//! `submissionId` fails the listing the same way. So, unlike clusters, a listing of an exact
//! multiple of `pageSize` jobs is confirmed by the count.

use std::collections::HashSet;

use tokio::time::Instant;

use super::{Call, EmrClient, inflight};
use crate::emr::error::{EmrError, ErrorKind};
use crate::emr::job::{ACTION_LIST_RAY_JOB, ListRayJobResponse, RayJob, SubmitWindow};
use crate::emr::{Credentials, sign};

/// A complete listing of the jobs of one workspace in one window.
#[derive(Clone, Debug, Default)]
pub struct JobListing {
    pub jobs: Vec<RayJob>,
    pub window: Option<SubmitWindow>,
    pub pages: u32,
    /// HTTP requests made, retries included.
    pub requests: u32,
    /// Bytes of the page bodies read.
    pub bytes: usize,
    /// The last page's `totalCount`, when the server sent one.
    pub total_count: Option<i64>,
}

impl EmrClient {
    /// The request URL of one page of `ListRayJob` for `window` (the SDK's query names).
    pub fn job_page_url(
        endpoint: &url::Url,
        workspace_id: &str,
        window: &SubmitWindow,
        page_num: u32,
        page_size: u32,
    ) -> url::Url {
        let mut url = endpoint.clone();
        let base = endpoint.path().trim_end_matches('/').to_string();
        url.set_path(&format!(
            "{base}/api/v1/workspaces/{}/rayJob",
            sign::rfc3986_encode(workspace_id)
        ));
        url.set_query(Some(&format!(
            "pageNum={page_num}&pageSize={page_size}&submitTime={}",
            sign::rfc3986_encode(&window.shrunk())
        )));
        url.set_fragment(None);
        url
    }

    /// Lists every job of `workspace_id` submitted in `window`, or fails; at most `max_jobs`
    /// (more fails the listing as `TooManyClusters`, which the controller reports as
    /// `TooManyJobs`). Requests count against `budget`'s share like the cluster listing's. In a
    /// span with the operation and the workspace, like the cluster listing.
    #[tracing::instrument(
        skip_all,
        fields(operation = ACTION_LIST_RAY_JOB, namespace = budget, workspace = workspace_id)
    )]
    pub async fn list_ray_jobs(
        &self,
        budget: Option<&str>,
        endpoint: &url::Url,
        workspace_id: &str,
        creds: &Credentials,
        window: SubmitWindow,
        max_jobs: usize,
    ) -> Result<JobListing, EmrError> {
        let (deadline, timeout) =
            self.preflight(endpoint, &[workspace_id], "workspace id is empty")?;
        let mut listing = JobListing {
            window: Some(window),
            ..Default::default()
        };
        let inner = self.list_jobs_inner(
            budget,
            endpoint,
            workspace_id,
            creds,
            window,
            max_jobs,
            deadline,
            &mut listing,
        );
        let finished = tokio::time::timeout_at(deadline, inner).await;
        let progress = (listing.pages, listing.requests);
        super::by_deadline(finished, timeout, progress, || {
            format!("job listing of workspace {workspace_id}")
        })
        .map(|()| listing)
    }

    #[allow(clippy::too_many_arguments)]
    async fn list_jobs_inner(
        &self,
        budget: Option<&str>,
        endpoint: &url::Url,
        workspace_id: &str,
        creds: &Credentials,
        window: SubmitWindow,
        max_jobs: usize,
        deadline: Instant,
        listing: &mut JobListing,
    ) -> Result<(), EmrError> {
        let cfg = &self.inner.cfg;
        let page_size = cfg.page_size as usize;
        let mut seen: HashSet<String> = HashSet::new();
        let mut hold: inflight::Hold = self.inner.in_flight.hold(budget);
        for page_num in 1..=cfg.max_pages {
            let url = Self::job_page_url(endpoint, workspace_id, &window, page_num, cfg.page_size);
            let call = Call {
                budget,
                url: &url,
                action: ACTION_LIST_RAY_JOB,
                workspace_id,
                page_num,
                creds,
                deadline,
                unchanged_if: None,
            };
            let result = self
                .fetch::<ListRayJobResponse>(
                    &call,
                    &mut listing.bytes,
                    &mut listing.requests,
                    &mut hold,
                )
                .await;
            let (page, request_id) = result?;
            listing.pages = page_num;
            if page.total_count.is_some() {
                listing.total_count = page.total_count;
            }
            let jobs = page.ray_jobs.unwrap_or_default();
            let n = jobs.len();
            let failed = |kind: ErrorKind, m: String| {
                EmrError::new(kind, m).with_request_id(request_id.clone())
            };
            if n > page_size {
                return Err(failed(
                    ErrorKind::Malformed,
                    format!(
                        "job page {page_num} has {n} jobs although pageSize is {page_size}: the \
                         server ignores pageSize"
                    ),
                ));
            }
            for j in jobs {
                if j.submission_id.is_empty() {
                    return Err(failed(
                        ErrorKind::Malformed,
                        format!("job page {page_num} has a job without submissionId"),
                    ));
                }
                // Decoding accepted only label-safe IDs: quoting one is safe.
                if !seen.insert(j.submission_id.clone()) {
                    return Err(failed(
                        ErrorKind::Incomplete,
                        format!(
                            "job page {page_num} repeats job {} already listed on an earlier \
                             page: the server repeated a page or the jobs changed while paging",
                            j.submission_id
                        ),
                    ));
                }
                listing.jobs.push(j);
            }
            if listing.jobs.len() > max_jobs {
                return Err(failed(
                    ErrorKind::TooManyClusters,
                    format!(
                        "workspace {workspace_id} has more than {max_jobs} Ray jobs in its \
                         retention window, the operator's limit (--max-jobs-per-workspace); \
                         shorten spec.jobs.retention"
                    ),
                ));
            }
            let total = listing.total_count.map(|t| t.max(0) as usize);
            let read = listing.jobs.len();
            let done = n < page_size || total.is_some_and(|t| read >= t);
            if done {
                return match total {
                    Some(t) if t != read => Err(failed(
                        ErrorKind::Incomplete,
                        format!(
                            "job listing ended after {read} jobs on page {page_num} although the \
                             server counts {t}: the server ended early or the jobs changed while \
                             paging"
                        ),
                    )),
                    _ => Ok(()),
                };
            }
        }
        Err(EmrError::new(
            ErrorKind::Incomplete,
            format!(
                "workspace {workspace_id} has more than {} pages of {} jobs (max_pages reached)",
                cfg.max_pages, cfg.page_size
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_page_url_has_the_sdk_query() {
        let u = EmrClient::job_page_url(
            &url::Url::parse("http://127.0.0.1:9/").unwrap(),
            "w 1",
            &SubmitWindow {
                start_ms: 1,
                end_ms: 2,
            },
            3,
            100,
        );
        assert_eq!(u.path(), "/api/v1/workspaces/w%201/rayJob");
        let q = sign::parse_query(u.query().unwrap());
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("pageNum"), Some("3"));
        assert_eq!(get("pageSize"), Some("100"));
        assert_eq!(
            SubmitWindow::parse(get("submitTime").unwrap()),
            Ok((Some(1), Some(2)))
        );
    }
}
