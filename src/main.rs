//! The `emr-ray-operator` binary: everything is in the library's `cli` module.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    emr_ray_operator::cli::main().await
}
