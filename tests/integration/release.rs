//! The GitHub Actions workflows (`.github/workflows/`): they pass actionlint (built by
//! `tests/tools/tools.sh`, cached in `.cache/bin`), the release publishes exactly the image the
//! chart installs by default and pushes the chart where the README installs it from, actions are
//! pinned to commits and tokens are least-privilege. Offline: no control plane, no network.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use serde_yaml::Value;

const CHART: &str = "charts/emr-ray-operator";
const RELEASE_WORKFLOW: &str = ".github/workflows/release.yml";
/// The README section that tells users how to install the chart.
const INSTALL_SECTION: &str = "## Installing into a real cluster";

fn read(rel: &str) -> String {
    let p = common::repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn yaml(rel: &str) -> Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

fn str_at<'a>(v: &'a Value, path: &[&str], what: &str) -> &'a str {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("{what}: {} is not a string: {cur:?}", path.join(".")))
}

/// `.github/workflows/*.yml` and `*.yaml`, sorted, relative to the repository.
fn workflow_files() -> Vec<String> {
    let dir = common::repo_root().join(".github/workflows");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .map(|p| {
            p.strip_prefix(common::repo_root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    assert!(
        files.iter().any(|f| f == RELEASE_WORKFLOW),
        "{RELEASE_WORKFLOW} is missing: {files:?}"
    );
    files
}

/// The `run:` scripts of the steps of `job` in `workflow`.
fn job_scripts<'a>(workflow: &'a Value, job: &str) -> Vec<&'a str> {
    workflow["jobs"][job]["steps"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{RELEASE_WORKFLOW}: job {job} has no steps"))
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect()
}

fn actionlint_path() -> PathBuf {
    let bin = common::bin_dir().join("actionlint");
    assert!(
        bin.is_file(),
        "actionlint is missing ({}): run tests/tools/tools.sh build (or build-actionlint)",
        bin.display()
    );
    bin
}

#[test]
fn workflows_pass_actionlint() {
    let files = workflow_files();
    let bin = actionlint_path();
    // actionlint runs shellcheck on the run: scripts when it is on PATH (and skips that rule
    // otherwise); the workflows pass either way.
    let out = Command::new(&bin)
        .arg("-no-color")
        .args(&files)
        .current_dir(common::repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "actionlint {} failed ({}):\n{}{}",
        files.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The chart's default image is `image.repository:(image.tag or appVersion)` (its
/// `emr-ray-operator.image` helper); the release publishes `$IMAGE:<tag without v>` from a tag it
/// checks equals `v<appVersion>` and `v<version>`. Both must name the same image.
#[test]
fn published_image_is_the_charts_default_image() {
    let chart = yaml(&format!("{CHART}/Chart.yaml"));
    let values = yaml(&format!("{CHART}/values.yaml"));
    let wf = yaml(RELEASE_WORKFLOW);

    let app_version = str_at(&chart, &["appVersion"], "Chart.yaml");
    let chart_version = str_at(&chart, &["version"], "Chart.yaml");
    let repository = str_at(&values, &["image", "repository"], "values.yaml");
    let tag = values["image"]["tag"].as_str().unwrap_or_default();
    let default_image = format!(
        "{repository}:{}",
        if tag.is_empty() { app_version } else { tag }
    );

    // The helper that the Deployment uses, as assumed above.
    let helpers = read(&format!("{CHART}/templates/_helpers.tpl"));
    assert!(
        helpers.contains(
            r#"printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag)"#
        ),
        "{CHART}/templates/_helpers.tpl no longer builds the image as repository:(tag or \
         appVersion); update this test and release.yml together"
    );

    // The release runs on v* tags and checks the tag against this chart.
    let tags = wf["on"]["push"]["tags"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{RELEASE_WORKFLOW}: on.push.tags is not a list"));
    assert_eq!(
        tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        [Some("v*")],
        "{RELEASE_WORKFLOW} must run on tags v*"
    );
    assert_eq!(
        str_at(&wf, &["env", "CHART_DIR"], RELEASE_WORKFLOW),
        CHART,
        "{RELEASE_WORKFLOW} checks the tag against another chart"
    );
    assert_eq!(
        chart_version, app_version,
        "{CHART}/Chart.yaml: version and appVersion differ, but a release tag v<x> must equal \
         both (release.yml checks it)"
    );
    let image = str_at(&wf, &["env", "IMAGE"], RELEASE_WORKFLOW);
    // The tag is v<appVersion>, so the release publishes $IMAGE:<appVersion>.
    let published = format!("{image}:{app_version}");
    assert_eq!(
        published, default_image,
        "the chart installs {default_image} by default, the release publishes {published}"
    );

    // $IMAGE is the one place the workflow names the image (comments aside): the build stamps
    // it into the archive and the index is tagged with it.
    let text = read(RELEASE_WORKFLOW);
    let named = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.matches(image).count())
        .sum::<usize>();
    assert_eq!(
        named, 1,
        "{RELEASE_WORKFLOW} names {image} outside env.IMAGE"
    );
    assert!(
        job_scripts(&wf, "image")
            .iter()
            .any(|s| s.contains("make image") && s.contains(r#"IMAGE_REF="$IMAGE:$VERSION""#)),
        "{RELEASE_WORKFLOW}: the image job does not run make image IMAGE_REF=\"$IMAGE:$VERSION\""
    );
    assert!(
        job_scripts(&wf, "publish")
            .iter()
            .any(|s| s.contains("crane index append") && s.contains(r#"-t "$IMAGE:$VERSION""#)),
        "{RELEASE_WORKFLOW}: the publish job does not tag the index $IMAGE:$VERSION"
    );
}

/// The chart references (`oci://…`) in the README's install section.
fn readme_chart_references(readme: &str) -> Vec<String> {
    let Some(start) = readme.find(INSTALL_SECTION) else {
        panic!("README.md has no section {INSTALL_SECTION:?}");
    };
    let body = &readme[start + INSTALL_SECTION.len()..];
    // Up to the next section of the same or a higher level.
    let end = body.find("\n## ").unwrap_or(body.len());
    body[..end]
        .split(|c: char| c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '(' | ')'))
        .filter(|w| w.starts_with("oci://"))
        .map(|w| w.trim_end_matches(['.', ',', ';', ':']).to_string())
        .collect()
}

#[test]
fn chart_is_pushed_where_the_readme_installs_from() {
    let wf = yaml(RELEASE_WORKFLOW);
    let chart = yaml(&format!("{CHART}/Chart.yaml"));
    let name = str_at(&chart, &["name"], "Chart.yaml");
    let chart_repo = str_at(&wf, &["env", "CHART_REPO"], RELEASE_WORKFLOW);
    assert!(
        chart_repo.starts_with("oci://") && !chart_repo.ends_with('/'),
        "{RELEASE_WORKFLOW}: CHART_REPO {chart_repo:?} is not oci://<registry>/<path>"
    );
    assert!(
        job_scripts(&wf, "publish")
            .iter()
            .any(|s| s.contains("helm push") && s.contains(r#""$CHART_REPO""#)),
        "{RELEASE_WORKFLOW}: the publish job does not helm push to $CHART_REPO"
    );
    // helm push <name>-<version>.tgz oci://R stores the chart as R/<name>:<version>.
    let pushed = format!("{chart_repo}/{name}");

    let refs = readme_chart_references(&read("README.md"));
    if refs.is_empty() {
        // The README installs from the source tree only (charts/emr-ray-operator); nothing to
        // compare yet. Once it names an oci:// chart, it must be this one.
        eprintln!(
            "README.md {INSTALL_SECTION:?} names no oci:// chart; the release pushes {pushed}"
        );
        return;
    }
    for r in &refs {
        assert_eq!(
            r, &pushed,
            "README.md installs the chart from {r}, the release pushes it to {pushed}"
        );
    }
}

#[test]
fn workflow_actions_are_pinned_and_tokens_least_privilege() {
    for rel in workflow_files() {
        let wf = yaml(&rel);
        // No default token permissions: every job says what it needs.
        assert_eq!(
            wf["permissions"].as_mapping().map(|m| m.len()),
            Some(0),
            "{rel}: top-level permissions must be {{}}"
        );
        let jobs = wf["jobs"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{rel}: no jobs"));
        for (job_name, job) in jobs {
            let job_name = job_name.as_str().unwrap_or_default();
            assert!(
                job["permissions"].is_mapping(),
                "{rel}: job {job_name} does not declare its permissions"
            );
            for step in job["steps"].as_sequence().into_iter().flatten() {
                let Some(uses) = step["uses"].as_str() else {
                    continue;
                };
                if uses.starts_with("./") {
                    continue;
                }
                let pinned = uses.rsplit_once('@').is_some_and(|(_, r)| {
                    r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
                });
                assert!(
                    pinned,
                    "{rel}: job {job_name} uses {uses}, not pinned to a full commit SHA"
                );
            }
        }
    }
    // Only the release's publish job may write packages or request an OIDC token.
    let wf = yaml(RELEASE_WORKFLOW);
    for (job_name, job) in wf["jobs"].as_mapping().unwrap() {
        let job_name = job_name.as_str().unwrap_or_default();
        let perms = job["permissions"].as_mapping().unwrap();
        let writes: Vec<&str> = perms
            .iter()
            .filter(|(_, v)| v.as_str() == Some("write"))
            .filter_map(|(k, _)| k.as_str())
            .collect();
        let want: &[&str] = if job_name == "publish" {
            &["packages", "id-token"]
        } else {
            &[]
        };
        assert_eq!(
            writes, want,
            "{RELEASE_WORKFLOW}: job {job_name} has write permissions {writes:?}"
        );
    }
}
