//! Realistic generated Ray clusters.

use emr_ray_operator::emr::model::{ClusterState, HeadSpec, RayCluster, WorkerSpec};
use rand::Rng as _;

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_id(rng: &mut impl rand::Rng, len: usize) -> String {
    (0..len)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

/// A cluster with realistic values; `index` makes the name unique, the ID is random
/// (`ray-` + 16 lower-case alphanumerics, as the reference's example).
pub fn cluster(prefix: &str, index: usize, now_ms: i64) -> RayCluster {
    let mut rng = rand::rng();
    let cluster_id = format!("ray-{}", random_id(&mut rng, 16));
    let created = now_ms - rng.random_range(60_000..30 * 86_400_000i64);
    let modified = created + rng.random_range(0..3_600_000i64);
    let state = match rng.random_range(0..20) {
        0 => ClusterState::Starting,
        1 => ClusterState::Stopping,
        2 | 3 => ClusterState::Stopped,
        4 => ClusterState::Error,
        _ => ClusterState::Running,
    };
    let (cpu, mem) =
        [("2", "8Gi"), ("4", "16Gi"), ("8", "32Gi"), ("16", "64Gi")][rng.random_range(0..4)];
    let gpu = rng.random_range(0..4) == 0;
    let replica = rng.random_range(0..8i64);
    let user = format!("2020776467551{:05}", rng.random_range(0..100_000));
    let creator_name = ["Alice", "Bob", "Carol", "Dave"][rng.random_range(0..4)];
    RayCluster {
        cluster_id: cluster_id.clone(),
        name: Some(format!("{prefix}-{index}")),
        display_release_version: Some("ray-1.0.0 (Ray 2.47.1, Python 3.12)".into()),
        description: Some(format!("Generated Ray cluster {index}.")),
        network_service_name: Some("vpc".into()),
        message: Some(if state == ClusterState::Error {
            "head node failed to start: insufficient quota in queue root_queue".into()
        } else {
            "ok".into()
        }),
        start_time: (state != ClusterState::Stopped).then_some(modified),
        state: Some(state),
        create_time: Some(created),
        modified_time: Some(modified),
        creator: Some(user.clone()),
        creator_name: Some(creator_name.into()),
        modifier: Some(user),
        modifier_name: Some(creator_name.into()),
        user_id: Some("1234567890".into()),
        instance_id: Some(format!("{cluster_id}-{}", random_id(&mut rng, 7))),
        dashboard_url: Some(format!(
            "https://emr-spark-ray-gateway-cn-hangzhou.aliyuncs.com?token={}",
            random_id(&mut rng, 32)
        )),
        grpc_endpoint: Some(
            "ray://emr-spark-ray-gateway-cn-hangzhou-internal.emr.aliyuncs.com:80".into(),
        ),
        modified: Some(rng.random_range(0..5) == 0),
        head_spec: Some(HeadSpec {
            queue_name: Some("root_queue".into()),
            cpu: Some(cpu.into()),
            memory: Some(mem.into()),
            replica: Some(1),
            gpu_spec: gpu.then(|| "ecs.gn6i-c4g1.xlarge".into()),
            enable_auto_scaling: Some(rng.random_range(0..2) == 0),
            idle_timeout_seconds: Some(60),
        }),
        worker_spec: Some(vec![WorkerSpec {
            group_name: Some("Group1".into()),
            worker_type: Some(if gpu { "GPU" } else { "CPU" }.into()),
            replica: Some(replica),
            queue_name: Some("root_queue".into()),
            cpu: Some(cpu.into()),
            memory: Some(mem.into()),
            gpu_spec: gpu.then(|| "ecs.gn6i-c4g1.xlarge".into()),
            min_replica: Some(replica.min(1)),
            max_replica: Some(10),
        }]),
    }
}
