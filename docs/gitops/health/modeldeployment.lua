-- Argo CD health check for kubeloop.io/v1alpha1 ModelDeployment (docs/gitops/README.md).
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
  -- Failed (its TrainingJob failed, or pods crash with no replica available) or Invalid.
  return result("Degraded", stalled)
end
local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  return result("Progressing", reconciling)
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  -- Ready: serving, rolled out (a rolled-back canary is in the message).
  return result("Healthy", ready)
end
return result("Progressing", ready)
