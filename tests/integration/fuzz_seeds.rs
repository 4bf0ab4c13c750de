//! The seeds of the `job_listing` and `queue_listing` fuzz targets (`fuzz/corpus/<target>/`) are
//! the simulator's real answers: this test asks an in-process simulator, with signed requests as
//! the client makes them, for job pages (a window, paging, every state the generator makes plus
//! a failed and a timed-out job) and queue pages (a first page with its `nextToken`, the last page,
//! one page of everything), checks that each decodes with the client's decoders, and, with
//! `EMR_WRITE_FUZZ_SEEDS=1`, writes them as `sim-*.json` seeds. Without it, it checks that every
//! seed of the two targets still decodes (a seed the decoder refuses would only exercise the
//! error path).

use crate::support::{creds, sim};
use emr_ray_operator::emr::client::signed_headers;
use emr_ray_operator::emr::job::{ListRayJobResponse, RayJob, SubmitWindow};
use emr_ray_operator::emr::queues::ListWorkspaceQueuesResponse;
use emr_ray_operator::emr::{
    ACTION_LIST_RAY_JOB, ACTION_LIST_WORKSPACE_QUEUES, EmrClient, QueueResources, SignatureVersion,
    WorkspaceQueue,
};
use emr_sim::SimHandle;
use emr_sim::jobs::SimJob;
use std::path::PathBuf;
use std::time::Duration;

const WS: &str = "w-seeds0000001";

async fn ask(url: url::Url, action: &str) -> Vec<u8> {
    let headers = signed_headers(
        SignatureVersion::default(),
        "GET",
        &url,
        "fuzz-seeds",
        &creds(),
        action,
    );
    let mut req = reqwest::Client::new().get(url.clone());
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.expect("the simulator answers");
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    resp.bytes().await.expect("a body").to_vec()
}

fn queue(name: &str, envs: &[&str], max: (f64, f64, f64), used: (f64, f64, f64)) -> WorkspaceQueue {
    let wire = |(cpu, memory_gi, gpu): (f64, f64, f64)| {
        QueueResources {
            cpu: Some(cpu),
            memory_gi: Some(memory_gi),
            gpu: Some(gpu),
        }
        .to_wire()
    };
    WorkspaceQueue {
        queue_name: Some(name.into()),
        queue_status: Some("RUNNING".into()),
        queue_type: Some("instance".into()),
        environments: Some(envs.iter().map(|e| e.to_string()).collect()),
        min_resource: Some(wire((max.0 / 4.0, max.1 / 4.0, 0.0))),
        max_resource: Some(wire(max)),
        used_resource: Some(wire(used)),
        workspace_id: Some(WS.into()),
        region_id: Some("cn-hangzhou".into()),
        create_time: Some(1_723_722_279_800),
        creator: Some("Alice".into()),
        payment_type: Some("PayAsYouGo".into()),
        queue_category: Some("Standard".into()),
        queue_scope: Some(r#"{"arch": "x86"}"#.into()),
        properties: None,
    }
}

fn failed(id: &str, status: &str, now_ms: i64) -> SimJob {
    SimJob {
        job: RayJob {
            submission_id: id.into(),
            name: Some(format!("nightly-{id}")),
            status: Some(status.into()),
            cluster_state: Some("Deleted".into()),
            resource_queue: Some("dev_queue".into()),
            submit_time: Some(now_ms - 600_000),
            start_time: Some(now_ms - 590_000),
            end_time: Some(now_ms - 290_000),
            duration: Some(300),
            cu_hours: Some(0.33),
            creator_name: Some("Bob".into()),
            dashboard_url: Some(format!(
                "https://emr-spark-ray-gateway-cn-hangzhou.aliyuncs.com/jobs/{id}?token=1234567890123456"
            )),
        },
        task_biz_id: Some("node-1".into()),
    }
}

/// The simulator's answers: `(target, seed name, body)`.
async fn answers(sim: &SimHandle) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let st = &sim.state;
    st.ensure_workspace(WS);
    st.generate_jobs(WS, 7, "etl", Duration::from_secs(86_400));
    st.upsert_job(WS, failed("raysubmit_failedseed01", "Failed", now_ms));
    st.upsert_job(WS, failed("raysubmit_timeoutseed1", "Timeout", now_ms));
    st.set_queues(
        WS,
        vec![
            queue(
                "root_queue",
                &["production"],
                (64.0, 256.0, 0.0),
                (60.5, 240.0, 0.0),
            ),
            queue("dev_queue", &["dev"], (16.0, 64.0, 2.0), (2.0, 8.0, 1.0)),
            queue(
                "gpu_queue",
                &["dev", "production"],
                (32.0, 128.0, 8.0),
                (0.5, 0.5, 0.0),
            ),
        ],
    );
    let window = SubmitWindow::last(Duration::from_secs(2 * 86_400), now_ms);
    let base = sim.base_url();
    let endpoint = &base;
    let mut out = Vec::new();
    for (name, page, size) in [
        ("sim-window-page1.json", 1, 5),
        ("sim-window-page2.json", 2, 5),
    ] {
        let url = EmrClient::job_page_url(endpoint, WS, &window, page, size);
        out.push(("job_listing", name, ask(url, ACTION_LIST_RAY_JOB).await));
    }
    let mut url = EmrClient::job_page_url(endpoint, WS, &window, 1, 100);
    url.set_query(Some("pageNum=1&pageSize=100"));
    out.push((
        "job_listing",
        "sim-all.json",
        ask(url, ACTION_LIST_RAY_JOB).await,
    ));

    let first = ask(
        EmrClient::queues_url(endpoint, WS, 2, None),
        ACTION_LIST_WORKSPACE_QUEUES,
    )
    .await;
    let page: ListWorkspaceQueuesResponse = serde_json::from_slice(&first).expect("queue page");
    let token = page
        .next_token
        .expect("a first page of 2 of 3 queues has a nextToken");
    let last = ask(
        EmrClient::queues_url(endpoint, WS, 2, Some(&token)),
        ACTION_LIST_WORKSPACE_QUEUES,
    )
    .await;
    let all = ask(
        EmrClient::queues_url(endpoint, WS, 100, None),
        ACTION_LIST_WORKSPACE_QUEUES,
    )
    .await;
    out.push(("queue_listing", "sim-page1-next-token.json", first));
    out.push(("queue_listing", "sim-page2-last.json", last));
    out.push(("queue_listing", "sim-all.json", all));
    out
}

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn decodes(target: &str, body: &[u8]) -> Result<usize, String> {
    match target {
        "job_listing" => serde_json::from_slice::<ListRayJobResponse>(body)
            .map(|p| p.ray_jobs.map_or(0, |j| j.len())),
        "queue_listing" => serde_json::from_slice::<ListWorkspaceQueuesResponse>(body)
            .map(|p| p.queues.map_or(0, |q| q.len())),
        t => unreachable!("{t}"),
    }
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn fuzz_seeds_are_the_simulators_answers() {
    let sim = sim().await;
    let answers = answers(&sim).await;
    sim.shutdown().await;
    let write = std::env::var("EMR_WRITE_FUZZ_SEEDS").is_ok_and(|v| v == "1");
    for (target, name, body) in &answers {
        let n = decodes(target, body).unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
        assert!(n > 0, "{target}/{name}: an empty page");
        if write {
            std::fs::create_dir_all(corpus(target)).unwrap();
            std::fs::write(corpus(target).join(name), body).unwrap();
        }
    }
    for target in ["job_listing", "queue_listing"] {
        let mut seeds = 0;
        for entry in std::fs::read_dir(corpus(target)).expect("the target's seeds") {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.starts_with("sim-") {
                continue; // hand-written (hostile) seeds may be refused on purpose
            }
            let body = std::fs::read(&path).unwrap();
            decodes(target, &body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seeds += 1;
        }
        assert!(seeds >= 3, "{target}: {seeds} simulator seeds");
    }
}
