//! Values the operator keeps in memory for long but reads rarely (the cached mirrors' status)
//! as deflated JSON: ≈55% of the JSON's size, decoded in microseconds while a sync plans.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Deflate level: the fastest, which already takes out the repeated field names.
const LEVEL: u8 = 1;
/// Largest value unpacked (a cap, not a size anything here reaches).
const MAX_UNPACKED: usize = 16 << 20;

/// A value as deflated JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Packed(Box<[u8]>);

impl Packed {
    /// Packs `value` (`None` if it does not serialize, which the operator's own types always do).
    pub fn pack<T: Serialize>(value: &T) -> Option<Packed> {
        let json = serde_json::to_vec(value).ok()?;
        Some(Packed(
            miniz_oxide::deflate::compress_to_vec(&json, LEVEL).into_boxed_slice(),
        ))
    }

    /// The value back (`None` if the bytes do not decode as a `T`).
    pub fn unpack<T: DeserializeOwned>(&self) -> Option<T> {
        let json =
            miniz_oxide::inflate::decompress_to_vec_with_limit(&self.0, MAX_UNPACKED).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// The deflated bytes (equal values pack to equal bytes).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emr::RayCluster;

    #[test]
    fn values_round_trip_smaller_than_their_json() {
        let c: RayCluster = serde_json::from_str(
            r#"{"clusterId":"ray-qlzhgq4upky9gwtk","name":"ray-w-3",
            "displayReleaseVersion":"ray-1.0.0 (Ray 2.47.1, Python 3.12)","state":"Error",
            "createTime":1699873043645,"creator":"202077646755129547","creatorName":"Carol",
            "modifier":"202077646755129547","modifierName":"Carol","userId":"1234567890",
            "message":"head node failed to start: insufficient quota in queue root_queue",
            "headSpec":{"queueName":"root_queue","cpu":"2","memory":"8Gi","replica":1},
            "workerSpec":[{"groupName":"Group1","workerType":"CPU","replica":4,
            "queueName":"root_queue","cpu":"2","memory":"8Gi","minReplica":1,"maxReplica":10}]}"#,
        )
        .unwrap();
        let p = Packed::pack(&c).unwrap();
        assert_eq!(p.unpack::<RayCluster>(), Some(c.clone()));
        let json = serde_json::to_vec(&c).unwrap().len();
        assert!(p.len() * 10 < json * 7, "{} of {json} bytes", p.len());
        // Bytes that are not a packed value read as nothing, never a panic.
        assert_eq!(Packed(Box::new([1, 2, 3])).unpack::<RayCluster>(), None);
    }
}
