//! The simulator's `ListWorkspaceQueues` (`GET /api/v1/workspaces/{ws}/queues`), as the official
//! SDK 2.3.0 calls it (query `environment`, `regionId`) and answers it (`queues[]`, `nextToken`,
//! `maxResults`, `totalCount`, `requestId`; resources as JSON in strings).
//!
//! Choices where the SDK and the documentation are silent:
//! * the SDK's request has no paging parameters, so without `maxResults` every queue comes in one
//!   page (no `nextToken`). With `maxResults` (1..=100; the convention of the product's
//!   `ListWorkspaces`) the queues are paged; `nextToken` is opaque: a token this simulator did
//!   not issue for this workspace, or past the end, answers 400 `InvalidParameter.NextToken`
//!   (the reference's error shape). The last page has no `nextToken`;
//! * `environment` keeps the queues whose `environments` name it (`dev` or `production`; any
//!   other value answers 400 `InvalidParameter`); `regionId` is accepted and ignored (the
//!   endpoint chooses the region);
//! * faults: `repeatPage` answers every follow-up page with page 1 and the token it was asked
//!   with (a server looping), `endEarly` answers follow-up pages empty without a token; the
//!   throttling, 5xx and body faults are those of `ListRayCluster`;
//! * a workspace without queues set answers `queues: []` (the real service creates `dev_queue`
//!   and `root_queue`; tests set what they need through the admin API).

use super::api::{Reply, page_body, parse_int_param};
use super::{Faults, SimState};
use axum::response::Response;
use base64::Engine as _;
use emr_ray_operator::emr::queues::{ListWorkspaceQueuesResponse, WorkspaceQueue};
use emr_ray_operator::emr::sign;

const TOKEN_ENGINE: base64::engine::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The token of the page starting at `offset` of workspace `ws`.
pub fn next_token(ws: &str, offset: usize) -> String {
    TOKEN_ENGINE.encode(format!("{offset}.{}", token_check(ws, offset)))
}

fn token_check(ws: &str, offset: usize) -> String {
    sign::sha256_hex(format!("emr-sim queues\n{ws}\n{offset}").as_bytes())[..16].to_string()
}

/// The offset a token stands for, if this simulator issued it for `ws`.
fn token_offset(ws: &str, token: &str) -> Option<usize> {
    let raw = TOKEN_ENGINE.decode(token.trim()).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (offset, check) = raw.split_once('.')?;
    let offset: usize = offset.parse().ok()?;
    (check == token_check(ws, offset)).then_some(offset)
}

pub(super) fn list_workspace_queues(
    st: &SimState,
    ws: &str,
    query: &[(String, String)],
    faults: &Faults,
    reply: &Reply,
) -> Response {
    let param = |name: &str| {
        query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let max_results = match parse_int_param(
        query,
        "maxResults",
        0,
        |n| (1..=100).contains(&n),
        "an integer from 1 to 100",
    ) {
        Ok(n) => n as usize,
        Err(m) => return reply.error(400, "InvalidParameter", &m),
    };
    let environment = param("environment");
    if let Some(e) = environment
        && e != "dev"
        && e != "production"
    {
        return reply.error(
            400,
            "InvalidParameter",
            &format!(
                "The specified parameter environment is invalid: {e:?}. It must be dev or production."
            ),
        );
    }
    let Some(all) = st.queues(ws) else {
        return reply.unknown_workspace(ws);
    };
    let all: Vec<WorkspaceQueue> = all
        .into_iter()
        .filter(|q| {
            environment.is_none_or(|e| {
                q.environments
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|x| x == e)
            })
        })
        .collect();
    let token = param("nextToken");
    let offset = match token {
        None => 0,
        Some(t) => match token_offset(ws, t).filter(|o| *o <= all.len()) {
            Some(o) => o,
            None => {
                return reply.error(
                    400,
                    "InvalidParameter.NextToken",
                    "The specified parameter nextToken is invalid.",
                );
            }
        },
    };
    let size = if max_results == 0 {
        all.len().max(1)
    } else {
        max_results
    };
    let (start, next) = match token {
        Some(t) if faults.repeat_page => {
            st.bump(|s| s.faults_injected += 1);
            (0, Some(t.to_string()))
        }
        Some(_) if faults.end_early => {
            st.bump(|s| s.faults_injected += 1);
            (all.len(), None)
        }
        _ => {
            let end = offset.saturating_add(size);
            (offset, (end < all.len()).then(|| next_token(ws, end)))
        }
    };
    let response = ListWorkspaceQueuesResponse {
        request_id: Some(reply.request_id.clone()),
        queues: Some(all.iter().skip(start).take(size).cloned().collect()),
        next_token: next,
        max_results: Some(size as i64),
        total_count: Some(all.len() as i64),
    };
    page_body(st, faults, reply, &response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_workspace_and_offset() {
        let t = next_token("w-1", 20);
        assert_eq!(token_offset("w-1", &t), Some(20));
        assert_eq!(token_offset("w-2", &t), None);
        assert_eq!(token_offset("w-1", "garbage"), None);
        assert_eq!(token_offset("w-1", ""), None);
        let forged = TOKEN_ENGINE.encode("21.0000000000000000");
        assert_eq!(token_offset("w-1", &forged), None);
    }
}
