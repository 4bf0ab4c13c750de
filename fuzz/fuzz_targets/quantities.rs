//! The remote `cpu`/`memory` strings and replica counts: parsed values are finite and
//! non-negative, the totals of `desired_resources` too, and `format_quantity` shows them.
#![no_main]

use emr_ray_operator::emr::model::{
    HeadSpec, RayCluster, WorkerSpec, format_quantity, parse_cpu, parse_memory_gi,
};
use libfuzzer_sys::fuzz_target;

fn check(v: Option<f64>, what: &str) {
    if let Some(v) = v {
        assert!(v.is_finite() && v >= 0.0, "{what}: {v}");
        let shown = format_quantity(v);
        let back: f64 = shown
            .parse()
            .unwrap_or_else(|_| panic!("{what}: {v} -> {shown:?}"));
        assert!(
            back >= 0.0 && !shown.starts_with('-'),
            "{what}: {v} -> {shown:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut parts = text.split('\n');
    let cpu = parts.next().unwrap_or_default();
    let memory = parts.next().unwrap_or_default();
    check(parse_cpu(cpu), "cpu");
    check(parse_memory_gi(memory), "memory");
    check(parse_cpu(text), "cpu");
    check(parse_memory_gi(text), "memory");

    // A cluster whose head and worker groups use these strings, with hostile replica counts.
    let replicas = [0, 1, 2, -1, i64::MAX, i64::MIN, 1 << 53, 1000];
    let replica = |k: u8| replicas[usize::from(k) % replicas.len()];
    let c = RayCluster {
        head_spec: (flags & 0x80 != 0).then(|| HeadSpec {
            cpu: Some(cpu.to_string()),
            memory: Some(memory.to_string()),
            replica: (flags & 0x40 != 0).then(|| replica(flags)),
            ..Default::default()
        }),
        worker_spec: (flags & 0x20 != 0).then(|| {
            parts
                .clone()
                .collect::<Vec<_>>()
                .chunks(2)
                .enumerate()
                .map(|(n, w)| WorkerSpec {
                    cpu: w.first().map(|s| s.to_string()),
                    memory: w.get(1).map(|s| s.to_string()),
                    replica: Some(replica(flags.wrapping_add(n as u8))),
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    };
    let r = c.desired_resources();
    assert!(r.workers.is_none_or(|w| w >= 0), "{r:?}");
    check(r.cpu, "desired cpu");
    check(r.memory_gi, "desired memory");
});
