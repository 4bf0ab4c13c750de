#!/usr/bin/env python3
"""The official SDK (alibabacloud-emr-serverless-spark20230808, pinned in requirements.txt) as
the simulator's conformance client.

For each signature the SDK offers with an AccessKey (ACS3-HMAC-SHA256, its default, and the ROA
HMAC-SHA1 of `signature_algorithm='v2'`), every check calls one API through the SDK against the
simulator, and:
  * parses the body into the SDK's model and checks every value against the model's declared
    type (`int`, `str`, `bool`, `List[...]`, nested models);
  * checks that every key the simulator sent is a field of the SDK's model (a misspelt field
    would otherwise be dropped silently by the SDK);
  * checks the content against what the simulator was given through its admin API.
Then a client with a wrong secret must be refused (SignatureDoesNotMatch) by every API.

Run by tests/integration/sdk_conformance.rs (simulator in-process) with the interpreter that
tests/sdk_conformance/sdk.sh sets up:
    conformance.py --endpoint 127.0.0.1:PORT --access-key-id ID --access-key-secret SECRET

Adding an API: write `check_<api>(ctx, style)` and add it to CHECKS; `ctx.call(style, name,
*args)` calls the SDK's `Client.<name>` with the style's client and returns the parsed response
after the model checks; `ctx.admin(method, path, body)` drives the simulator.
"""

import argparse
import inspect
import json
import re
import sys
import time
import urllib.request
import uuid

from alibabacloud_emr_serverless_spark20230808 import models
from alibabacloud_emr_serverless_spark20230808.client import Client
from alibabacloud_tea_openapi import models as openapi_models
from darabonba.model import DaraModel

# (name, signature_algorithm given to the SDK's Config; None is the SDK's default).
STYLES = [("ACS3-HMAC-SHA256", None), ("ROA-HMAC-SHA1", "v2")]


class Failure(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failure(what)


# ---------------------------------------------------------------- model checks

_SCALARS = {"int": int, "str": str, "bool": bool, "float": (int, float)}


def _check_value(value, annotation, path):
    """`value` against the annotation string of a DaraModel field (PEP 563 strings)."""
    if value is None:
        return
    ann = annotation.strip()
    if ann in _SCALARS:
        ok = isinstance(value, _SCALARS[ann]) and not (ann == "int" and isinstance(value, bool))
        expect(ok, f"{path}: {value!r} is {type(value).__name__}, the SDK declares {ann}")
        return
    m = re.fullmatch(r"List\[(.*)\]", ann)
    if m:
        expect(isinstance(value, list), f"{path}: {type(value).__name__}, the SDK declares {ann}")
        for i, v in enumerate(value):
            _check_value(v, m.group(1), f"{path}[{i}]")
        return
    if re.fullmatch(r"Dict\[.*\]", ann):
        expect(isinstance(value, dict), f"{path}: {type(value).__name__}, the SDK declares {ann}")
        return
    if ann.startswith("main_models."):
        expect(isinstance(value, DaraModel), f"{path}: {type(value).__name__}, not {ann}")
        check_model(value, path)
        return
    raise Failure(f"{path}: unknown annotation {ann!r} in the SDK (extend _check_value)")


def check_model(obj, path):
    """Every field of `obj` has the SDK's declared type, recursively."""
    params = inspect.signature(type(obj).__init__).parameters
    for name, p in params.items():
        if name == "self":
            continue
        _check_value(getattr(obj, name), str(p.annotation), f"{path}.{name}")


def check_known_keys(raw, model_map, path):
    """Every key of the raw body is one the SDK model maps (`to_map` of the parsed model)."""
    if isinstance(raw, dict):
        expect(isinstance(model_map, dict), f"{path}: the SDK did not parse an object here")
        for k, v in raw.items():
            expect(k in model_map, f"{path}.{k}: sent by the simulator, unknown to the SDK model")
            check_known_keys(v, model_map[k], f"{path}.{k}")
    elif isinstance(raw, list) and raw and isinstance(raw[0], dict):
        expect(isinstance(model_map, list) and len(model_map) == len(raw), f"{path}: list lost")
        for i, (r, m) in enumerate(zip(raw, model_map)):
            check_known_keys(r, m, f"{path}[{i}]")


# ---------------------------------------------------------------- context


class Context:
    def __init__(self, args):
        self.args = args
        self.admin_base = f"http://{args.endpoint}/admin"
        self.clients = {name: self._client(alg, args.access_key_secret) for name, alg in STYLES}
        self.wrong = {name: self._client(alg, args.access_key_secret + "-wrong") for name, alg in STYLES}
        self.calls = 0

    def _client(self, signature_algorithm, secret):
        cfg = openapi_models.Config(
            access_key_id=self.args.access_key_id,
            access_key_secret=secret,
            endpoint=self.args.endpoint,
            protocol="http",
            region_id="cn-hangzhou",
            read_timeout=10000,
            connect_timeout=5000,
        )
        if signature_algorithm:
            cfg.signature_algorithm = signature_algorithm
        client = Client(cfg)
        # Keep the raw answer of every call: the SDK's models drop unknown keys silently.
        original = client.call_api

        def recording(params, request, runtime):
            result = original(params, request, runtime)
            client.last_raw = result
            return result

        client.call_api = recording
        return client

    def admin(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.admin_base + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return json.loads(text) if text else None

    def call(self, style, name, *args):
        """`Client.<name>(*args)` with the style's client; the response after the model checks."""
        client = self.clients[style]
        client.last_raw = None
        resp = getattr(client, name)(*args)
        self.calls += 1
        where = f"{style} {name}"
        expect(resp.status_code == 200, f"{where}: status {resp.status_code}")
        expect(client.last_raw is not None, f"{where}: no raw answer recorded")
        check_model(resp.body, f"{where} body")
        check_known_keys(client.last_raw["body"], resp.body.to_map(), f"{where} body")
        return resp

    def refused(self, style, name, *args):
        """The same call with a wrong secret must fail with SignatureDoesNotMatch."""
        try:
            getattr(self.wrong[style], name)(*args)
        except Exception as e:  # the SDK raises its own ClientException / ServerException
            code = getattr(e, "code", None) or str(e)
            expect("SignatureDoesNotMatch" in str(code), f"{style} {name} wrong secret: {code}")
            return
        raise Failure(f"{style} {name}: a wrong secret was accepted")


# ---------------------------------------------------------------- checks (one per API)


def check_list_ray_cluster(ctx, style):
    """ListRayCluster: pageNum/pageSize paging until a short page, every cluster once."""
    ws = f"w-sdk{uuid.uuid4().hex[:10]}"
    ctx.admin("PUT", f"/workspaces/{ws}")
    generated = ctx.admin("POST", f"/workspaces/{ws}/generate", {"count": 45, "prefix": "sdk"})
    want = generated["clusterIds"]
    seen = []
    page = 1
    while True:
        req = models.ListRayClusterRequest(page_num=page, page_size=20)
        body = ctx.call(style, "list_ray_cluster", ws, req).body
        expect(body.request_id, f"{style} ListRayCluster page {page}: no requestId")
        seen += [c.cluster_id for c in body.ray_clusters]
        for c in body.ray_clusters:
            expect(c.head_spec is not None and c.state, f"{style}: cluster {c.cluster_id} lacks headSpec/state")
            expect(isinstance(c.create_time, int), f"{style}: createTime is not epoch milliseconds")
        if len(body.ray_clusters) < 20:
            break
        page += 1
        expect(page < 10, f"{style} ListRayCluster: paging does not end")
    expect(seen == want, f"{style} ListRayCluster: listed {len(seen)} clusters, generated {len(want)}")
    expect(page == 3, f"{style} ListRayCluster: {page} pages for 45 clusters of 20")
    ctx.refused(style, "list_ray_cluster", ws, models.ListRayClusterRequest(page_num=1, page_size=20))
    ctx.admin("DELETE", f"/workspaces/{ws}")


def check_list_workspace_queues(ctx, style):
    """ListWorkspaceQueues: resources as JSON in strings, totalCount, the environment filter.
    The SDK's request has no paging parameters (environment and regionId only): one page."""
    ws = f"w-sdk{uuid.uuid4().hex[:10]}"
    queues = [
        {
            "queueName": "root_queue", "queueStatus": "RUNNING", "queueType": "instance",
            "environments": ["production"], "workspaceId": ws, "regionId": "cn-hangzhou",
            "createTime": 1723722279800, "creator": "237109", "paymentType": "PayAsYouGo",
            "queueCategory": "CPU", "queueScope": '{"arch": "x86"}', "properties": "root_queue",
            "minResource": '{"cpu": "0","memory": "0Gi"}',
            "maxResource": '{"cpu": "100","memory": "400Gi","gpu": "0"}',
            "usedResource": '{"cpu": "12","memory": "48Gi","gpu": "0"}',
        },
        {
            "queueName": "dev_queue", "queueStatus": "RUNNING", "queueType": "instance",
            "environments": ["dev"],
            "minResource": '{"cpu": "2","memory": "8Gi"}',
            "maxResource": '{"cpu": "16","memory": "64Gi"}',
        },
    ]
    ctx.admin("PUT", f"/workspaces/{ws}/queues", queues)
    ctx.admin("PUT", f"/workspaces/{ws}/queues/dev_queue/usage", {"cpu": 15, "memoryGi": 60, "gpu": 0})
    body = ctx.call(style, "list_workspace_queues", ws, models.ListWorkspaceQueuesRequest(region_id="cn-hangzhou")).body
    expect(body.request_id, f"{style} ListWorkspaceQueues: no requestId")
    expect(body.total_count == 2, f"{style} ListWorkspaceQueues: totalCount {body.total_count}")
    expect(not body.next_token, f"{style} ListWorkspaceQueues: a nextToken the SDK cannot send back")
    names = [q.queue_name for q in body.queues]
    expect(names == ["root_queue", "dev_queue"], f"{style} ListWorkspaceQueues: queues {names}")
    for q in body.queues:
        for field in ("min_resource", "max_resource", "used_resource"):
            v = getattr(q, field)
            if v is None:
                continue
            parsed = json.loads(v)  # the documented shape: a JSON object in a string
            expect(isinstance(parsed, dict) and "cpu" in parsed, f"{style} {q.queue_name}.{field}: {v!r}")
    dev = body.queues[1]
    expect(json.loads(dev.used_resource) == {"cpu": "15", "memory": "60Gi", "gpu": "0"},
           f"{style} dev_queue usedResource: {dev.used_resource!r}")
    only_dev = ctx.call(style, "list_workspace_queues", ws, models.ListWorkspaceQueuesRequest(environment="dev")).body
    expect([q.queue_name for q in only_dev.queues] == ["dev_queue"], f"{style}: environment=dev filter")
    ctx.refused(style, "list_workspace_queues", ws, models.ListWorkspaceQueuesRequest())
    ctx.admin("DELETE", f"/workspaces/{ws}")


def check_get_ray_cluster(ctx, style):
    """GetRayCluster: the listed cluster plus instances[] and the secret-bearing fields, every one
    typed as the SDK's models say; an unknown cluster is a 404 InvalidRayClusterId.NotFound."""
    ws = f"w-sdk{uuid.uuid4().hex[:10]}"
    ctx.admin("PUT", f"/workspaces/{ws}")
    cid = ctx.admin("POST", f"/workspaces/{ws}/generate", {"count": 1, "prefix": "sdk"})["clusterIds"][0]
    ctx.admin("PUT", f"/workspaces/{ws}/clusters/{cid}/detail", {
        "instances": [
            {"type": "head", "instanceId": f"{cid}-head-0", "phase": "Failed", "reason": "Error",
             "message": "The node was low on resource: memory.", "containerState": "Terminated",
             "containerStateReason": "OOMKilled", "containerStateMessage": "Killed",
             "containerExitCode": 137, "createTime": 1723722279800, "startTime": 1723722280800},
            {"type": "worker", "instanceId": f"{cid}-worker-0", "phase": "Running",
             "containerState": "Running", "containerExitCode": 0},
        ],
        "submitToken": "sdk-submit-token", "jobUrl": "https://job.example/?token=t",
        "jobUrlInner": "https://job.internal/?token=t", "extraParam": "{\"k\": \"v\"}",
        "volumeIds": ["v-1"],
        "headSpec": {"env": "{\"A\": \"b\"}", "rayStartParams": "{\"num-cpus\": \"1\"}",
                     "gftEnabled": True,
                     "gftConfig": {"redisPassword": "p", "redisUrl": "redis://h:6379", "redisUsername": "u"}},
        "workerSpec": {"env": "{\"A\": \"b\"}", "rayStartParams": "{}"},
    })
    body = ctx.call(style, "get_ray_cluster", ws, cid).body
    expect(body.request_id, f"{style} GetRayCluster: no requestId")
    expect(body.cluster_id == cid and body.state, f"{style} GetRayCluster: cluster {body.cluster_id!r} state {body.state!r}")
    kinds = [(i.type, i.container_state_reason, i.container_exit_code) for i in body.instances]
    expect(kinds == [("head", "OOMKilled", 137), ("worker", None, 0)], f"{style} GetRayCluster instances: {kinds}")
    expect(body.submit_token == "sdk-submit-token", f"{style} GetRayCluster: submitToken {body.submit_token!r}")
    expect(body.head_spec.gft_config.redis_password == "p", f"{style} GetRayCluster: headSpec.gftConfig")
    expect(all(w.env for w in body.worker_spec), f"{style} GetRayCluster: workerSpec[].env")
    try:
        ctx.clients[style].get_ray_cluster(ws, "ray-sdk-unknown")
    except Exception as e:
        code = getattr(e, "code", None) or str(e)
        expect("InvalidRayClusterId.NotFound" in str(code), f"{style} GetRayCluster unknown cluster: {code}")
    else:
        raise Failure(f"{style} GetRayCluster: an unknown cluster was answered")
    ctx.refused(style, "get_ray_cluster", ws, cid)
    ctx.admin("DELETE", f"/workspaces/{ws}")


def check_list_ray_job(ctx, style):
    """ListRayJob: pageNum/pageSize paging with totalCount, and the submitTime window (an object
    the SDK sends JSON-encoded in one query parameter) filtering what is listed."""
    ws = f"w-sdk{uuid.uuid4().hex[:10]}"
    ctx.admin("PUT", f"/workspaces/{ws}")
    generated = ctx.admin("POST", f"/workspaces/{ws}/generate-jobs", {"count": 25, "prefix": "sdk", "spreadSecs": 3600})
    want = set(generated["submissionIds"])
    seen = []
    total = None
    for page in range(1, 10):
        req = models.ListRayJobRequest(page_num=page, page_size=10)
        body = ctx.call(style, "list_ray_job", ws, req).body
        expect(body.request_id, f"{style} ListRayJob page {page}: no requestId")
        total = body.total_count
        seen += [j.submission_id for j in body.ray_jobs]
        for j in body.ray_jobs:
            expect(isinstance(j.submit_time, int) and j.status, f"{style}: job {j.submission_id} submitTime/status")
        if len(body.ray_jobs) < 10:
            break
    expect(total == 25, f"{style} ListRayJob: totalCount {total}")
    expect(len(seen) == 25 and set(seen) == want, f"{style} ListRayJob: listed {len(seen)} jobs, generated 25")
    # A window that ends before every job was submitted lists none; one around them lists all.
    now_ms = int(time.time() * 1000)
    before = models.ListRayJobRequestSubmitTime(start_time=now_ms - 30 * 86_400_000, end_time=now_ms - 2 * 3_600_000)
    empty = ctx.call(style, "list_ray_job", ws, models.ListRayJobRequest(page_num=1, page_size=100, submit_time=before)).body
    expect(not empty.ray_jobs and empty.total_count == 0, f"{style} ListRayJob: window before the jobs listed {empty.total_count}")
    around = models.ListRayJobRequestSubmitTime(start_time=now_ms - 2 * 3_600_000, end_time=now_ms + 60_000)
    every = ctx.call(style, "list_ray_job", ws, models.ListRayJobRequest(page_num=1, page_size=100, submit_time=around)).body
    expect(every.total_count == 25, f"{style} ListRayJob: window around the jobs listed {every.total_count}")
    ctx.refused(style, "list_ray_job", ws, models.ListRayJobRequest(page_num=1, page_size=10))
    ctx.admin("DELETE", f"/workspaces/{ws}")


CHECKS = [check_list_ray_cluster, check_get_ray_cluster, check_list_ray_job, check_list_workspace_queues]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True, help="host:port of the simulator")
    p.add_argument("--access-key-id", required=True)
    p.add_argument("--access-key-secret", required=True)
    args = p.parse_args()
    ctx = Context(args)
    failures = 0
    for style, _ in STYLES:
        for check in CHECKS:
            try:
                check(ctx, style)
                print(f"ok   {style:18} {check.__name__}")
            except Exception as e:  # report every check, fail at the end
                failures += 1
                print(f"FAIL {style:18} {check.__name__}: {type(e).__name__}: {e}")
    print(f"{len(STYLES) * len(CHECKS) - failures} passed, {failures} failed, {ctx.calls} SDK calls")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
