//! Proves that the test control plane (tests/control-plane, real Kubernetes 1.34
//! kube-apiserver + kube-controller-manager + etcd) behaves like a real cluster for the
//! things this operator's tests rely on. Uses a test-only CRD (`Widget`) defined here.
//!
//! Run: `cargo test --test control_plane` (starts its own control plane), or with
//! `EMR_TEST_KUBECONFIG=.cache/kcp/admin.kubeconfig` after `tests/control-plane/kcp.sh up`.

use crate::common;

use std::time::Duration;

use crate::common::{TestNamespace, wait_for};
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    core::v1::{ConfigMap, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    },
};
use serde_json::json;

const GROUP: &str = "harness.test.emr.aliyun.io";
const CRD_NAME: &str = "widgets.harness.test.emr.aliyun.io";

fn widget_crd() -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": CRD_NAME },
        "spec": {
            "group": GROUP,
            "names": { "kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": { "type": "integer", "minimum": 1, "maximum": 10 },
                                "color": { "type": "string" }
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": { "type": "string" },
                                "observedSize": { "type": "integer" }
                            }
                        }
                    }
                }}
            }]
        }
    })
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "Widget"), "widgets")
}

async fn widgets(client: &Client, ns: &str) -> Api<DynamicObject> {
    common::apply_crd(client, &widget_crd()).await;
    Api::namespaced_with(client.clone(), ns, &widget_resource())
}

fn widget(name: &str, spec: serde_json::Value) -> DynamicObject {
    DynamicObject::new(name, &widget_resource()).data(json!({ "spec": spec }))
}

fn api_error(err: kube::Error) -> Box<kube::core::Status> {
    match err {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crd_is_established_and_served() {
    let ns = TestNamespace::new("cp-crd").await;
    let crd = common::apply_crd(&ns.client, &widget_crd()).await;
    assert_eq!(crd.spec.names.kind, "Widget");
    // applying again is a no-op
    common::apply_crd(&ns.client, &widget_crd()).await;

    let api = widgets(&ns.client, &ns.name).await;
    let created = api
        .create(
            &PostParams::default(),
            &widget("w1", json!({ "size": 3, "color": "red" })),
        )
        .await
        .expect("create widget");
    assert!(created.uid().is_some());
    let got = api.get("w1").await.expect("get widget");
    assert_eq!(got.data["spec"]["size"], 3);
    assert_eq!(got.data["spec"]["color"], "red");
    let list = api.list(&Default::default()).await.expect("list widgets");
    assert_eq!(list.items.len(), 1);
    ns.cleanup().await;
}

#[tokio::test]
async fn schema_validation_rejects_bad_objects_with_server_message() {
    let ns = TestNamespace::new("cp-schema").await;
    let api = widgets(&ns.client, &ns.name).await;

    let err = api
        .create(
            &PostParams::default(),
            &widget("too-big", json!({ "size": 11 })),
        )
        .await
        .expect_err("size 11 must be rejected");
    let status = api_error(err);
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.size"),
        "message: {}",
        status.message
    );
    assert!(
        status.message.contains("less than or equal to 10"),
        "message: {}",
        status.message
    );

    let err = api
        .create(
            &PostParams::default(),
            &widget("missing", json!({ "color": "blue" })),
        )
        .await
        .expect_err("missing size must be rejected");
    let status = api_error(err);
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.size"),
        "message: {}",
        status.message
    );
    assert!(
        status.message.contains("Required value"),
        "message: {}",
        status.message
    );

    // a good one is accepted
    api.create(&PostParams::default(), &widget("ok", json!({ "size": 10 })))
        .await
        .expect("size 10 is valid");
    ns.cleanup().await;
}

#[tokio::test]
async fn server_side_apply_records_field_manager_and_status_subresource_works() {
    let ns = TestNamespace::new("cp-ssa").await;
    let api = widgets(&ns.client, &ns.name).await;
    let api_version = format!("{GROUP}/v1");

    let applied = api
        .patch(
            "w",
            &PatchParams::apply("widget-spec-writer"),
            &Patch::Apply(json!({
                "apiVersion": api_version, "kind": "Widget",
                "metadata": { "name": "w" },
                "spec": { "size": 2 }
            })),
        )
        .await
        .expect("server-side apply of spec");
    let mf = applied.managed_fields();
    let spec_entry = mf
        .iter()
        .find(|m| m.manager.as_deref() == Some("widget-spec-writer"))
        .unwrap_or_else(|| panic!("manager missing from managedFields: {mf:?}"));
    assert_eq!(spec_entry.operation.as_deref(), Some("Apply"));
    assert!(
        spec_entry
            .fields_v1
            .as_ref()
            .is_some_and(|f| f.0.to_string().contains("f:size")),
        "{spec_entry:?}"
    );

    let with_status = api
        .patch_status(
            "w",
            &PatchParams::apply("widget-status-writer"),
            &Patch::Apply(json!({
                "apiVersion": api_version, "kind": "Widget",
                "metadata": { "name": "w" },
                "status": { "phase": "Ready", "observedSize": 2 }
            })),
        )
        .await
        .expect("status apply");
    assert_eq!(with_status.data["status"]["phase"], "Ready");
    let status_entry = with_status
        .managed_fields()
        .iter()
        .find(|m| m.manager.as_deref() == Some("widget-status-writer"))
        .cloned()
        .expect("status manager in managedFields");
    assert_eq!(status_entry.subresource.as_deref(), Some("status"));

    // Writing status through the main resource is ignored; spec changes are kept.
    let after = api
        .patch(
            "w",
            &PatchParams::apply("widget-spec-writer"),
            &Patch::Apply(json!({
                "apiVersion": api_version, "kind": "Widget",
                "metadata": { "name": "w" },
                "spec": { "size": 5 },
                "status": { "phase": "Hacked" }
            })),
        )
        .await
        .expect("spec apply with status");
    assert_eq!(after.data["spec"]["size"], 5);
    assert_eq!(after.data["status"]["phase"], "Ready");
    let got = api.get("w").await.unwrap();
    assert_eq!(got.data["status"]["phase"], "Ready");
    assert_eq!(got.data["status"]["observedSize"], 2);

    // Status updates do not touch spec.
    api.patch_status(
        "w",
        &PatchParams::apply("widget-status-writer"),
        &Patch::Apply(json!({
            "apiVersion": api_version, "kind": "Widget",
            "metadata": { "name": "w" },
            "spec": { "size": 9 },
            "status": { "phase": "Done", "observedSize": 5 }
        })),
    )
    .await
    .expect("status apply 2");
    let got = api.get("w").await.unwrap();
    assert_eq!(got.data["spec"]["size"], 5);
    assert_eq!(got.data["status"]["phase"], "Done");
    ns.cleanup().await;
}

#[tokio::test]
async fn deleting_owner_garbage_collects_dependents() {
    let ns = TestNamespace::new("cp-gc").await;
    let cms: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let owner: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "owner" }, "data": { "role": "owner" }
    }))
    .unwrap();
    let owner = cms
        .create(&PostParams::default(), &owner)
        .await
        .expect("create owner");
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap",
                "name": "owner", "uid": owner.uid().unwrap()
            }]
        },
        "data": { "role": "dependent" }
    }))
    .unwrap();
    cms.create(&PostParams::default(), &dependent)
        .await
        .expect("create dependent");

    cms.delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    wait_for(
        Duration::from_secs(60),
        "garbage collector to delete the dependent ConfigMap",
        || async {
            cms.get_opt("dependent")
                .await
                .expect("get dependent")
                .is_none()
                .then_some(())
        },
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn validating_admission_policy_denies_with_its_message() {
    let ns = TestNamespace::new("cp-vap").await;
    let client = ns.client.clone();
    let policy_name = format!("{}-no-forbidden-key", ns.name);
    let message = "configmaps here must not have the key 'forbidden'";
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": { "name": policy_name },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": { "resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]
            }]},
            "validations": [{
                "expression": "!has(object.data) || !('forbidden' in object.data)",
                "message": message
            }]
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": { "name": policy_name },
        "spec": {
            "policyName": policy_name,
            "validationActions": ["Deny"],
            "matchResources": { "namespaceSelector": {
                "matchLabels": { "kubernetes.io/metadata.name": ns.name }
            }}
        }
    }))
    .unwrap();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create policy");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let bad: ConfigMap = serde_json::from_value(
        json!({ "metadata": { "name": "bad" }, "data": { "forbidden": "x" } }),
    )
    .unwrap();
    // Policies become effective asynchronously: retry until denied.
    let status = wait_for(
        Duration::from_secs(60),
        "the admission policy to deny",
        || async {
            match cms.create(&PostParams::default(), &bad).await {
                Ok(_) => {
                    cms.delete("bad", &DeleteParams::default())
                        .await
                        .expect("delete bad");
                    None
                }
                Err(kube::Error::Api(s)) => Some(s),
                Err(e) => panic!("unexpected error: {e:?}"),
            }
        },
    )
    .await;
    assert!(
        status.message.contains(message),
        "message: {}",
        status.message
    );
    assert!(
        status.message.contains(&policy_name),
        "message: {}",
        status.message
    );
    assert_eq!(status.code, 422, "{status:?}");

    // A compliant object is still admitted.
    let good: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "good" }, "data": { "fine": "x" } }))
            .unwrap();
    cms.create(&PostParams::default(), &good)
        .await
        .expect("create good");

    bindings
        .delete(&policy_name, &DeleteParams::default())
        .await
        .expect("delete binding");
    policies
        .delete(&policy_name, &DeleteParams::default())
        .await
        .expect("delete policy");
    ns.cleanup().await;
}

#[tokio::test]
async fn rbac_denies_service_account_what_its_role_does_not_grant() {
    let ns = TestNamespace::new("cp-rbac").await;
    let client = ns.client.clone();
    let sa: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "reader" } })).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create SA");
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "configmap-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"] }]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns.name }]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &rb)
        .await
        .expect("create rolebinding");
    let cm: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "visible" }, "data": { "k": "v" } }))
            .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");

    let sa_client = common::service_account_client(&client, &ns.name, "reader").await;
    let sa_cms: Api<ConfigMap> = Api::namespaced(sa_client.clone(), &ns.name);
    // The RBAC authorizer's caches are eventually consistent: retry the granted call.
    let got = wait_for(
        Duration::from_secs(30),
        "RBAC to grant get configmaps",
        || async { sa_cms.get("visible").await.ok() },
    )
    .await;
    assert_eq!(got.data.unwrap()["k"], "v");

    let new_cm: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "nope" } })).unwrap();
    let status = api_error(
        sa_cms
            .create(&PostParams::default(), &new_cm)
            .await
            .expect_err("create must be forbidden"),
    );
    assert_eq!(status.code, 403, "{status:?}");
    assert_eq!(status.reason, "Forbidden");
    assert!(
        status
            .message
            .contains(&format!("system:serviceaccount:{}:reader", ns.name)),
        "message: {}",
        status.message
    );
    assert!(
        status
            .message
            .contains("cannot create resource \"configmaps\""),
        "message: {}",
        status.message
    );

    // Other namespaces are not visible either.
    let other: Api<ConfigMap> = Api::namespaced(sa_client, "default");
    let status = api_error(
        other
            .get("kube-root-ca.crt")
            .await
            .expect_err("other ns must be forbidden"),
    );
    assert_eq!(status.code, 403, "{status:?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn apiserver_metrics_count_write_requests() {
    let ns = TestNamespace::new("cp-metrics").await;
    let api = widgets(&ns.client, &ns.name).await;
    // Metrics are process-global and tests run concurrently: only count this test's
    // own writes as a lower bound.
    let before = common::apiserver_metrics(&ns.client).await;
    for i in 0..3 {
        api.create(
            &PostParams::default(),
            &widget(&format!("m{i}"), json!({ "size": 1 })),
        )
        .await
        .expect("create widget");
    }
    api.patch(
        "m0",
        &PatchParams::apply("metrics-test").force(),
        &Patch::Apply(json!({
            "apiVersion": format!("{GROUP}/v1"), "kind": "Widget",
            "metadata": { "name": "m0" }, "spec": { "size": 2 }
        })),
    )
    .await
    .expect("apply");
    let after = common::apiserver_metrics(&ns.client).await;
    let posts = common::count_requests(&after, "POST", "widgets")
        - common::count_requests(&before, "POST", "widgets");
    let applies = common::count_requests(&after, "APPLY", "widgets")
        - common::count_requests(&before, "APPLY", "widgets");
    assert!(posts >= 3.0, "POST delta {posts}");
    assert!(applies >= 1.0, "APPLY delta {applies}");
    let writes = common::count_write_requests(&after, "widgets")
        - common::count_write_requests(&before, "widgets");
    assert!(writes >= 4.0, "write delta {writes}");
    ns.cleanup().await;
}
