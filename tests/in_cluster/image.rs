//! `make image`: the OCI archive is reproducible, holds only the operator (no simulator, no
//! shell, no package manager), runs as 65532, carries the OCI annotations, and the Dockerfile
//! builds the same thing. Needs no node: it runs in the plain `cargo test` pass.

use crate::common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// A string only the simulator's admin API has: its absence shows the binary holds no simulator
/// (the operator package has none since the simulator became its own crate, `sim/`).
const SIM_MARKER: &[u8] = b"/workspaces/{ws}/generate";

struct Image {
    digest: String,
    config: Value,
    annotations: BTreeMap<String, String>,
    /// Layer entries: path → (mode, contents for regular files).
    files: BTreeMap<String, (u32, Option<Vec<u8>>)>,
}

fn build(out: &Path, tmpdir: &Path) -> String {
    // The environment of a shell, not of `cargo test` (whose CARGO_PKG_* and friends would
    // make the nested cargo rebuild what `make image` built).
    let mut cmd = Command::new("bash");
    cmd.env_clear();
    for keep in ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "LANG"] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    let output = cmd
        .arg(common::repo_root().join("image/build.sh"))
        .env("IMAGE_OUT", out)
        .env("TMPDIR", tmpdir)
        .output()
        .expect("running image/build.sh");
    assert!(
        output.status.success(),
        "image/build.sh failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .expect("image/build.sh prints the digest")
        .to_string()
}

fn entries(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut tar = tar::Archive::new(archive);
    for e in tar.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let path = e.path().expect("entry path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("entry data");
        out.insert(path, data);
    }
    out
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let name = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    files.get(&name).unwrap_or_else(|| panic!("{name} missing"))
}

fn read(archive: &Path) -> Image {
    let bytes = std::fs::read(archive).unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
    let files = entries(&bytes);
    let index: Value = serde_json::from_slice(&files["index.json"]).expect("index.json");
    let desc = &index["manifests"][0];
    let digest = desc["digest"]
        .as_str()
        .expect("manifest digest")
        .to_string();
    let manifest: Value = serde_json::from_slice(blob(&files, &digest)).expect("manifest");
    let config: Value = serde_json::from_slice(blob(
        &files,
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ))
    .expect("config");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer");
    let gz = blob(&files, layers[0]["digest"].as_str().expect("layer digest"));
    let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut layer_files = BTreeMap::new();
    for e in layer.entries().expect("layer entries") {
        let mut e = e.expect("layer entry");
        let path = e
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let mode = e.header().mode().expect("mode");
        let header = e.header();
        assert_eq!(
            (
                header.uid().unwrap(),
                header.gid().unwrap(),
                header.mtime().unwrap()
            ),
            (0, 0, 0),
            "{path}: owner root and mtime 0"
        );
        let data = if e.header().entry_type().is_file() {
            let mut d = Vec::new();
            e.read_to_end(&mut d).expect("file data");
            Some(d)
        } else {
            None
        };
        layer_files.insert(path, (mode, data));
    }
    let annotations = manifest["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Image {
        digest,
        config,
        annotations,
        files: layer_files,
    }
}

fn chart_app_version() -> String {
    let chart: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(common::repo_root().join("charts/emr-ray-operator/Chart.yaml"))
            .unwrap(),
    )
    .unwrap();
    chart["appVersion"]
        .as_str()
        .expect("appVersion")
        .to_string()
}

#[test]
fn image_is_reproducible_minimal_non_root_and_annotated() {
    let dir = tempfile::tempdir().unwrap();
    let (tmp_a, tmp_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&tmp_a).unwrap();
    std::fs::create_dir_all(&tmp_b).unwrap();
    let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    let digest_a = build(&a, &tmp_a);
    // A second build, staged elsewhere at another time, from the same commit.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let digest_b = build(&b, &tmp_b);
    assert_eq!(digest_a, digest_b, "two builds of one commit, one digest");
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "byte-identical archives"
    );

    let image = read(&a);
    assert_eq!(image.digest, digest_a);
    let cfg = &image.config["config"];
    assert_eq!(cfg["User"], "65532:65532");
    assert_eq!(
        cfg["Entrypoint"],
        serde_json::json!(["/usr/local/bin/emr-ray-operator"])
    );
    assert_eq!(cfg["Cmd"], serde_json::json!(["run"]));
    let version = chart_app_version();
    assert_eq!(
        image.annotations["org.opencontainers.image.version"],
        version
    );
    assert!(
        image.annotations["org.opencontainers.image.source"].starts_with("https://github.com/")
    );
    assert_eq!(
        image.annotations["org.opencontainers.image.revision"].len(),
        40,
        "revision is a commit"
    );

    // Only the binary, the C libraries and four small files: no shell, no package manager.
    for (path, (mode, data)) in &image.files {
        let name = path.rsplit('/').next().unwrap_or_default();
        for forbidden in [
            "sh", "bash", "busybox", "apt", "apt-get", "dpkg", "su", "sudo",
        ] {
            assert_ne!(name, forbidden, "{path} does not belong in the image");
        }
        // Directories and nothing else without contents (no symlinks).
        let Some(data) = data else {
            assert!(
                [
                    "etc",
                    "tmp",
                    "usr",
                    "usr/local",
                    "usr/local/bin",
                    "lib",
                    "lib64",
                    "lib/x86_64-linux-gnu",
                    "lib/aarch64-linux-gnu",
                ]
                .contains(&path.as_str()),
                "unexpected entry in the image: {path}"
            );
            continue;
        };
        let library =
            (path.starts_with("lib/") || path.starts_with("lib64/")) && name.contains(".so");
        let allowed = path == "usr/local/bin/emr-ray-operator"
            || library
            || ["etc/passwd", "etc/group", "etc/nsswitch.conf"].contains(&path.as_str());
        assert!(
            allowed,
            "unexpected file in the image: {path} ({mode:o}, {} bytes)",
            data.len()
        );
    }
    let passwd =
        String::from_utf8(image.files["etc/passwd"].1.clone().expect("etc/passwd")).unwrap();
    assert!(passwd.contains(":65532:65532:"), "{passwd}");
    let nss = String::from_utf8(image.files["etc/nsswitch.conf"].1.clone().unwrap()).unwrap();
    assert!(
        nss.contains("hosts: files dns"),
        "host names resolve from /etc/hosts: {nss}"
    );
    assert_eq!(
        image.files["tmp"].0 & 0o7777,
        0o1777,
        "/tmp is sticky and world-writable"
    );
    let binary = image.files["usr/local/bin/emr-ray-operator"]
        .1
        .as_ref()
        .expect("the operator binary");
    assert!(
        !binary.windows(SIM_MARKER.len()).any(|w| w == SIM_MARKER),
        "the image's binary holds no simulator"
    );
    // Nor does the operator's debug build; the marker is the simulator's: emr-sim has it
    // (built beside this test by `cargo test --workspace`, as `make test` runs it).
    let has_marker = |bin: &[u8]| bin.windows(SIM_MARKER.len()).any(|w| w == SIM_MARKER);
    let operator = std::fs::read(env!("CARGO_BIN_EXE_emr-ray-operator")).unwrap();
    assert!(
        !has_marker(&operator),
        "a plain build of the operator holds no simulator"
    );
    let sim_bin =
        std::path::Path::new(env!("CARGO_BIN_EXE_emr-ray-operator")).with_file_name("emr-sim");
    let with_sim = std::fs::read(&sim_bin).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build the workspace: cargo test --workspace)",
            sim_bin.display()
        )
    });
    assert!(
        has_marker(&with_sim),
        "the marker is not in the simulator's binary: pick another"
    );
    let size = std::fs::metadata(&a).unwrap().len();
    eprintln!(
        "image {digest_a}: {size} bytes ({:.1} MiB)",
        size as f64 / 1048576.0
    );
}

/// The Dockerfile builds the same image: the same cargo build, the same staging script, the
/// same user, entrypoint and command.
#[test]
fn dockerfile_builds_what_make_image_builds() {
    let docker = std::fs::read_to_string(common::repo_root().join("Dockerfile")).unwrap();
    let build = std::fs::read_to_string(common::repo_root().join("image/build.sh")).unwrap();
    let cargo = "cargo build --locked --profile image -p emr-ray-operator --bin emr-ray-operator";
    assert!(docker.contains(cargo), "Dockerfile: {cargo}");
    assert!(
        build.contains("build --locked --profile image -p emr-ray-operator --bin emr-ray-operator"),
        "image/build.sh: {cargo}"
    );
    assert!(docker.contains("image/rootfs.sh target/image-build/image/emr-ray-operator /rootfs"));
    assert!(docker.contains("CARGO_TARGET_DIR=/src/target/image-build"));
    assert!(build.contains("CARGO_TARGET_DIR=\"$REPO/target/image-build\""));
    assert!(build.contains("image/rootfs.sh \"$bin\" \"$rootfs\""));
    assert!(docker.contains("FROM scratch"));
    assert!(docker.contains("USER 65532:65532"));
    assert!(build.contains("--user 65532:65532"));
    assert!(docker.contains(r#"ENTRYPOINT ["/usr/local/bin/emr-ray-operator"]"#));
    assert!(docker.contains(r#"CMD ["run"]"#));
    assert!(build.contains("--entrypoint /usr/local/bin/emr-ray-operator --cmd run"));
}
