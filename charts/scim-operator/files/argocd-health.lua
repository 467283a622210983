-- Argo CD health check for scim.unique.app/ScimTenant.
-- Install: resource.customizations.health.scim.unique.app_ScimTenant in argocd-cm
-- (see the chart's README). It reads the kstatus conditions the operator writes:
--   not yet observed (no status, or observedGeneration behind) -> Progressing
--   spec.suspend, confirmed by Ready reason Suspended          -> Suspended
--   Stalled=True (a human must act)                             -> Degraded
--   Reconciling=True (converging, retried)                      -> Progressing
--   Ready=True                                                  -> Healthy
-- Reconciling and Stalled are present only while True. Argo CD runs Lua 5.1.
local hs = { status = "Progressing", message = "Waiting for the operator to report status" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end
local c = {}
for _, cond in ipairs(obj.status.conditions) do
  if cond.type ~= nil then
    c[cond.type] = cond
  end
end
local function describe(cond)
  local reason = cond.reason or ""
  if cond.message ~= nil and cond.message ~= "" then
    return reason .. ": " .. cond.message
  end
  return reason
end
local suspended = obj.spec ~= nil and obj.spec.suspend == true
if suspended or (c.Ready ~= nil and c.Ready.reason == "Suspended") then
  hs.status = "Suspended"
  hs.message = "ScimTenant is suspended (spec.suspend): the operator leaves it as it is"
  return hs
end
if c.Stalled ~= nil and c.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(c.Stalled)
  return hs
end
if c.Reconciling ~= nil and c.Reconciling.status == "True" then
  hs.message = describe(c.Reconciling)
  return hs
end
if c.Ready ~= nil and c.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(c.Ready)
  return hs
end
if c.Ready ~= nil then
  hs.message = describe(c.Ready)
end
return hs
