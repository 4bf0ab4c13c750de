-- Argo CD health check for emr.aliyun.io EmrWorkspace, EmrRayCluster and EmrRayJob.
-- Register it in argocd-cm as resource.customizations.health.emr.aliyun.io_EmrWorkspace,
-- resource.customizations.health.emr.aliyun.io_EmrRayCluster and
-- resource.customizations.health.emr.aliyun.io_EmrRayJob (see argocd-cm-patch.yaml).
--
-- Order of the checks:
--   no status yet                        -> Progressing
--   spec.suspend (EmrWorkspace)          -> Suspended
--   status.gone (EmrRayCluster)          -> Degraded (the remote cluster no longer exists and
--                                           goneClusterPolicy is Keep: someone should look)
--   status.observedGeneration < generation -> Progressing
--   Stalled=True                         -> Degraded (a Failed or Timeout EmrRayJob too)
--   Ready=True                           -> Healthy (a Succeeded EmrRayJob too)
--   Reconciling=True                     -> Progressing (a Submitted, Pending, Running or
--                                           Cancelling EmrRayJob too)
--   status.state Stopped (EmrRayCluster) -> Suspended
--   status.state Cancelled (EmrRayJob)   -> Suspended (cancelled on purpose: final, not failed)
--   anything else                        -> Progressing
local hs = {}

local function find_condition(status, type_)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local msg = c.message
  if msg == nil or msg == "" then
    msg = fallback
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason .. ": " .. msg
  end
  return msg
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for emr-ray-operator to report status"
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Syncing is suspended (spec.suspend)"
  return hs
end

if status.gone == true then
  hs.status = "Degraded"
  local id = ""
  if obj.spec ~= nil and obj.spec.clusterId ~= nil then
    id = " " .. obj.spec.clusterId
  end
  hs.message = "Remote Ray cluster" .. id .. " no longer exists (kept because goneClusterPolicy is Keep)"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for emr-ray-operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find_condition(status, "Ready")
local stalled = find_condition(status, "Stalled")
local reconciling = find_condition(status, "Reconciling")

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

if is_true(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

if status.state == "Stopped" then
  hs.status = "Suspended"
  hs.message = describe(ready, "Ray cluster is Stopped")
  return hs
end

if obj.kind == "EmrRayJob" and status.state == "Cancelled" then
  hs.status = "Suspended"
  hs.message = describe(ready, "Ray job was cancelled")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the Ready condition")
return hs
