//! `ListWorkspaceQueues`: the EMR client's `nextToken` paging against the simulator (both
//! signatures, retries, the loop and short-listing protections) and the simulator's answers to
//! hand-made requests (opaque tokens, parameters).

use crate::support::creds;
use emr_ray_operator::emr::client::signed_headers;
use emr_ray_operator::emr::{
    ACTION_LIST_WORKSPACE_QUEUES, ClientConfig, Credentials, EmrClient, ErrorKind, QueueResources,
    SignatureVersion, WorkspaceQueue,
};
use emr_sim::{DEFAULT_ACCESS_KEY_ID, Faults, SimConfig, SimHandle, Simulator};
use serde_json::Value;

fn queue(name: &str, max_cpu: f64, used_cpu: f64) -> WorkspaceQueue {
    WorkspaceQueue {
        queue_name: Some(name.into()),
        queue_status: Some("RUNNING".into()),
        queue_type: Some("instance".into()),
        environments: Some(vec!["production".into()]),
        max_resource: Some(
            QueueResources {
                cpu: Some(max_cpu),
                memory_gi: Some(max_cpu * 4.0),
                gpu: Some(0.0),
            }
            .to_wire(),
        ),
        used_resource: Some(
            QueueResources {
                cpu: Some(used_cpu),
                memory_gi: Some(used_cpu * 4.0),
                gpu: Some(0.0),
            }
            .to_wire(),
        ),
        ..Default::default()
    }
}

async fn sim_with(ws: &str, n: usize) -> SimHandle {
    let sim = Simulator::start(SimConfig::with_default_fixture())
        .await
        .expect("simulator starts");
    let queues = (0..n)
        .map(|i| queue(&format!("q{i}"), 16.0, i as f64))
        .collect();
    sim.state.set_queues(ws, queues);
    sim
}

fn client(sig: SignatureVersion, page_size: u32) -> EmrClient {
    EmrClient::new(ClientConfig {
        page_size,
        signature: sig,
        max_retries: 2,
        ..Default::default()
    })
    .expect("client")
}

#[tokio::test]
async fn pages_by_next_token_with_both_signatures() {
    let sim = sim_with("w-queues", 7).await;
    for sig in [
        SignatureVersion::Acs3HmacSha256,
        SignatureVersion::RoaHmacSha1,
    ] {
        let l = client(sig, 3)
            .list_workspace_queues_within(None, &sim.base_url(), "w-queues", &creds())
            .await
            .unwrap_or_else(|e| panic!("{sig:?}: {e}"));
        let names: Vec<_> = l
            .queues
            .iter()
            .map(|q| q.queue_name.clone().unwrap())
            .collect();
        assert_eq!(names, ["q0", "q1", "q2", "q3", "q4", "q5", "q6"], "{sig:?}");
        assert_eq!((l.pages, l.requests, l.request_ids.len()), (3, 3, 3));
        let used = QueueResources::parse(l.queues[5].used_resource.as_deref());
        assert_eq!((used.cpu, used.memory_gi), (Some(5.0), Some(20.0)));
    }
    // One page when the queues fit; an empty workspace is an empty listing, not an error.
    let l = client(SignatureVersion::default(), 100)
        .list_workspace_queues_within(None, &sim.base_url(), "w-queues", &creds())
        .await
        .unwrap();
    assert_eq!((l.queues.len(), l.pages), (7, 1));
    sim.state.set_queues("w-empty", vec![]);
    let l = client(SignatureVersion::default(), 100)
        .list_workspace_queues_within(None, &sim.base_url(), "w-empty", &creds())
        .await
        .unwrap();
    assert!(l.queues.is_empty());
    let e = client(SignatureVersion::default(), 100)
        .list_workspace_queues_within(None, &sim.base_url(), "w-nope", &creds())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    sim.shutdown().await;
}

#[tokio::test]
async fn looping_short_and_throttled_listings() {
    let sim = sim_with("w-q", 5).await;
    let c = client(SignatureVersion::default(), 2);
    // A server answering page 1 with the same token again: the loop is caught.
    sim.state.set_faults(Faults {
        repeat_page: true,
        ..Faults::default()
    });
    let e = c
        .list_workspace_queues_within(None, &sim.base_url(), "w-q", &creds())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Incomplete, "{e}");
    assert!(
        e.message.contains("repeats queue") || e.message.contains("nextToken"),
        "{e}"
    );
    // A server ending early (no token, fewer queues than its totalCount): incomplete, not short.
    sim.state.set_faults(Faults {
        end_early: true,
        ..Faults::default()
    });
    let e = c
        .list_workspace_queues_within(None, &sim.base_url(), "w-q", &creds())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Incomplete, "{e}");
    assert!(e.message.contains("totalCount is 5"), "{e}");
    // Throttled once: retried, and the listing completes.
    sim.state.set_faults(Faults {
        throttle_next: 1,
        ..Faults::default()
    });
    let l = c
        .list_workspace_queues_within(None, &sim.base_url(), "w-q", &creds())
        .await
        .unwrap();
    assert_eq!((l.queues.len(), l.pages, l.requests), (5, 3, 4));
    // A wrong secret is refused.
    sim.state.set_faults(Faults::default());
    let e = c
        .list_workspace_queues_within(
            None,
            &sim.base_url(),
            "w-q",
            &Credentials::new(DEFAULT_ACCESS_KEY_ID, "wrong"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    sim.shutdown().await;
}

#[tokio::test]
async fn simulator_refuses_foreign_tokens_and_bad_parameters() {
    let sim = sim_with("w-t", 3).await;
    let ask = |query: &'static str, ws: &'static str| {
        let mut url = sim.base_url();
        url.set_path(&format!("/api/v1/workspaces/{ws}/queues"));
        url.set_query(Some(query));
        async move {
            let headers = signed_headers(
                SignatureVersion::default(),
                "GET",
                &url,
                "queues-test",
                &creds(),
                ACTION_LIST_WORKSPACE_QUEUES,
            );
            let mut req = reqwest::Client::new().get(url);
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = ask("maxResults=2", "w-t").await;
    assert_eq!(status, 200);
    assert_eq!(
        (first["totalCount"].as_i64(), first["maxResults"].as_i64()),
        (Some(3), Some(2))
    );
    let token = first["nextToken"].as_str().unwrap().to_string();
    assert!(!token.is_empty());
    // The token is bound to its workspace; garbage is refused in the reference's error shape.
    sim.state.set_queues("w-other", vec![queue("x", 1.0, 0.0)]);
    let q: &'static str = Box::leak(format!("maxResults=2&nextToken={token}").into_boxed_str());
    let (status, body) = ask(q, "w-other").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["Code"], "InvalidParameter.NextToken");
    assert!(
        body["RequestId"].is_string() && body["Recommend"].is_string(),
        "{body}"
    );
    let (status, body) = ask("nextToken=bm90LWEtdG9rZW4", "w-t").await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("InvalidParameter.NextToken"))
    );
    let (status, second) = ask(q, "w-t").await;
    assert_eq!(status, 200);
    assert_eq!(second["queues"].as_array().unwrap().len(), 1);
    assert!(second.get("nextToken").is_none(), "{second}");
    for bad in [
        "maxResults=0",
        "maxResults=101",
        "maxResults=x",
        "environment=staging",
    ] {
        let (status, body) = ask(bad, "w-t").await;
        assert_eq!(
            (status, body["Code"].as_str()),
            (400, Some("InvalidParameter")),
            "{bad}"
        );
    }
    sim.shutdown().await;
}
