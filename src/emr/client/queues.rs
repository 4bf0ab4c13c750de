//! `ListWorkspaceQueues`: every queue of a workspace, paged by `nextToken`, with the listing's
//! protections (signing, no redirect, rate limits, retries, deadline, body and in-flight byte
//! budgets — the same [`EmrClient::fetch`]).
//!
//! The official SDK's request has only `environment` and `regionId`, and its response has
//! `nextToken`, `maxResults` and `totalCount`; the client sends `maxResults` (its `page_size`)
//! and, when a page names one, the `nextToken` (the convention of the product's `ListWorkspaces`),
//! so it reads every page whether or not the service pages. A listing either returns every queue
//! or fails:
//! * a `nextToken` seen before (a server looping) fails it with `Incomplete`;
//! * a queue name listed twice, or fewer queues than the last page's `totalCount`, fails it with
//!   `Incomplete`;
//! * more than [`MAX_QUEUE_PAGES`] pages or [`MAX_QUEUES`] queues fail it (`Incomplete`,
//!   `TooManyClusters`);
//! * a queue without `queueName` fails it as `Malformed`.

use super::{Call, EmrClient, inflight};
use crate::emr::error::{EmrError, ErrorKind};
use crate::emr::queues::{
    ACTION_LIST_WORKSPACE_QUEUES, ListWorkspaceQueuesResponse, WorkspaceQueue,
};
use crate::emr::{Credentials, sign};
use std::collections::HashSet;
use tokio::time::Instant;

/// Most pages of one queue listing.
pub const MAX_QUEUE_PAGES: u32 = 50;
/// Most queues of one workspace.
pub const MAX_QUEUES: usize = 1000;

/// A complete queue listing of one workspace.
#[derive(Clone, Debug, Default)]
pub struct QueueListing {
    pub queues: Vec<WorkspaceQueue>,
    pub pages: u32,
    /// HTTP requests made, retries included.
    pub requests: u32,
    /// Request IDs of the successful page requests, in page order.
    pub request_ids: Vec<String>,
    /// Bytes of the page bodies read.
    pub bytes: usize,
}

impl EmrClient {
    /// Lists every queue of `workspace_id`, or fails (see the module documentation). Requests
    /// count against `budget`'s share of the rate like the cluster listing's. In a span with the
    /// operation and the workspace, like the cluster listing.
    #[tracing::instrument(
        skip_all,
        fields(
            operation = ACTION_LIST_WORKSPACE_QUEUES,
            namespace = budget,
            workspace = workspace_id
        )
    )]
    pub async fn list_workspace_queues_within(
        &self,
        budget: Option<&str>,
        endpoint: &url::Url,
        workspace_id: &str,
        creds: &Credentials,
    ) -> Result<QueueListing, EmrError> {
        let (deadline, timeout) =
            self.preflight(endpoint, &[workspace_id], "workspace id is empty")?;
        let mut listing = QueueListing::default();
        let run = self.queues_inner(
            budget,
            endpoint,
            workspace_id,
            creds,
            deadline,
            &mut listing,
        );
        let finished = tokio::time::timeout_at(deadline, run).await;
        let progress = (listing.pages, listing.requests);
        super::by_deadline(finished, timeout, progress, || {
            format!("listing the queues of workspace {workspace_id}")
        })
        .map(|()| listing)
    }

    async fn queues_inner(
        &self,
        budget: Option<&str>,
        endpoint: &url::Url,
        workspace_id: &str,
        creds: &Credentials,
        deadline: Instant,
        listing: &mut QueueListing,
    ) -> Result<(), EmrError> {
        let page_size = self.inner.cfg.page_size;
        let mut hold: inflight::Hold = self.inner.in_flight.hold(budget);
        let mut names: HashSet<String> = HashSet::new();
        let mut tokens: HashSet<String> = HashSet::new();
        let mut token: Option<String> = None;
        for page_num in 1..=MAX_QUEUE_PAGES {
            let url = Self::queues_url(endpoint, workspace_id, page_size, token.as_deref());
            let call = Call {
                budget,
                url: &url,
                action: ACTION_LIST_WORKSPACE_QUEUES,
                workspace_id,
                page_num,
                creds,
                deadline,
                unchanged_if: None,
            };
            let (page, request_id): (ListWorkspaceQueuesResponse, _) = self
                .fetch(&call, &mut listing.bytes, &mut listing.requests, &mut hold)
                .await?;
            listing.pages = page_num;
            if let Some(id) = request_id.clone() {
                listing.request_ids.push(id);
            }
            let fail =
                |kind, m: String| Err(EmrError::new(kind, m).with_request_id(request_id.clone()));
            for q in page.queues.unwrap_or_default() {
                // Decoding cleaned and capped the name (`text::MAX_SHORT`).
                let Some(name) = q.queue_name.clone().filter(|n| !n.is_empty()) else {
                    return fail(
                        ErrorKind::Malformed,
                        format!("queue page {page_num} has a queue without queueName"),
                    );
                };
                if !names.insert(name.clone()) {
                    return fail(
                        ErrorKind::Incomplete,
                        format!(
                            "queue page {page_num} repeats queue {name:?}: the server repeated a \
                             page or the queues changed while paging"
                        ),
                    );
                }
                listing.queues.push(q);
                if listing.queues.len() > MAX_QUEUES {
                    return fail(
                        ErrorKind::TooManyClusters,
                        format!("workspace {workspace_id} has more than {MAX_QUEUES} queues"),
                    );
                }
            }
            match page.next_token {
                None => {
                    let total = page.total_count.unwrap_or(0);
                    if total > listing.queues.len() as i64 {
                        return fail(
                            ErrorKind::Incomplete,
                            format!(
                                "the queue listing ended after {} queues although totalCount is \
                                 {total}",
                                listing.queues.len()
                            ),
                        );
                    }
                    return Ok(());
                }
                Some(next) => {
                    if !tokens.insert(next.clone()) {
                        return fail(
                            ErrorKind::Incomplete,
                            format!(
                                "queue page {page_num} sends a nextToken already followed: the \
                                 server is looping"
                            ),
                        );
                    }
                    token = Some(next);
                }
            }
        }
        Err(EmrError::new(
            ErrorKind::Incomplete,
            format!(
                "workspace {workspace_id} has more than {MAX_QUEUE_PAGES} pages of queues \
                 (page limit reached)"
            ),
        ))
    }

    /// The request URL of one queue page.
    pub fn queues_url(
        endpoint: &url::Url,
        workspace_id: &str,
        max_results: u32,
        next_token: Option<&str>,
    ) -> url::Url {
        let mut url = endpoint.clone();
        let base = endpoint.path().trim_end_matches('/').to_string();
        url.set_path(&format!(
            "{base}/api/v1/workspaces/{}/queues",
            sign::rfc3986_encode(workspace_id)
        ));
        let mut query = format!("maxResults={max_results}");
        if let Some(t) = next_token {
            query.push_str(&format!("&nextToken={}", sign::rfc3986_encode(t)));
        }
        url.set_query(Some(&query));
        url.set_fragment(None);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_url_encodes_workspace_and_token() {
        let ep = url::Url::parse("http://127.0.0.1:8480/p/").unwrap();
        assert_eq!(
            EmrClient::queues_url(&ep, "w 1", 100, Some("a+b/c=")).as_str(),
            "http://127.0.0.1:8480/p/api/v1/workspaces/w%201/queues?maxResults=100&nextToken=a%2Bb%2Fc%3D"
        );
        assert_eq!(
            EmrClient::queues_url(&ep, "w", 5, None).query(),
            Some("maxResults=5")
        );
    }
}
