-- Argo CD health check for kubeloop.io/v1alpha1 DriftMonitor (docs/gitops/README.md).
-- It reads the status the operator writes for kstatus: observedGeneration, Ready, and
-- Reconciling or Stalled while True. Argo CD itself reports an object that is being
-- deleted as Progressing, before it runs this script.
local hs = {}

local function condition(ctype)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function result(health, cond)
  hs.status = health
  hs.message = obj.status.message or (cond ~= nil and cond.message) or ""
  return hs
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator's first status"
  return hs
end
if obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation "
    .. tostring(obj.metadata.generation)
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  -- Degraded until the spec changes (bad reference, source not allowed) or Invalid.
  return result("Degraded", stalled)
end
local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  return result("Progressing", reconciling)
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  -- Collecting, Healthy or Drifted: the checks run (a drift verdict is in the message).
  return result("Healthy", ready)
end
if ready ~= nil and ready.status == "False" then
  -- Degraded: the source is unavailable or invalid; the check is retried every interval.
  return result("Degraded", ready)
end
return result("Progressing", ready)
